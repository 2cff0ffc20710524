// Who the command is to etcd: the user name and password that the flags and
// etcdctl's variables give, a flag before its variable.

package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// credentials returns the user name and password that -user, -password,
// ETCDCTL_USER and ETCDCTL_PASSWORD give, by the rules of the package doc,
// or why they do not make a pair. Both are empty for no authentication.
// No error shows the password.
func credentials(o *options) (user, password string, err error) {
	levels := []struct {
		user, password       string
		userArg, passwordArg string // how the user names them
	}{
		{o.user, o.password, "-user ", "-password"},
		{os.Getenv("ETCDCTL_USER"), os.Getenv("ETCDCTL_PASSWORD"), "ETCDCTL_USER=", "ETCDCTL_PASSWORD"},
	}
	userArg := ""
	for _, l := range levels {
		var inUser string
		if user == "" && l.user != "" {
			user, inUser, _ = strings.Cut(l.user, ":")
			if user == "" {
				return "", "", fmt.Errorf("no user name in %sname:password", l.userArg)
			}
			userArg = l.userArg
		}
		if password != "" {
			continue // a flag's wins
		}
		if inUser != "" && l.password != "" {
			return "", "", fmt.Errorf("the password is given twice: in %sname:password and in %s", l.userArg, l.passwordArg)
		}
		password = inUser + l.password // one of the two at most
	}
	switch {
	case user == "" && password != "":
		return "", "", errors.New("a password needs a user name: -user name, or ETCDCTL_USER=name")
	case user != "" && password == "":
		// etcdctl would ask for it, which a pipe does not allow.
		return "", "", fmt.Errorf("%s%s has no password, and biregister does not ask for one: "+
			"give it with -password, in ETCDCTL_PASSWORD, or as %s%s:password", userArg, user, userArg, user)
	}
	return user, password, nil
}
