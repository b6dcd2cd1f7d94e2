package main

import (
	"fmt"
	"os"

	"github.com/creachadair/command"
	"github.com/go-cache-plugin/go-cache-plugin/lib/mtimes"
)

func canonicalMtimesCommand() *command.C {
	return &command.C{
		Name:  "canonical-mtimes",
		Usage: "[DIR...]",
		Help: `Set file modification times from file content, for cached test results.

The go command keys a cached test result on the modification times and
sizes of the files the test opened (testdata and the like). A fresh CI
checkout gives every file the checkout's time, so results cached by one
worker never match on the next. canonical-mtimes sets the time of every
file git tracks below each DIR (default: the whole work tree holding the
current directory), and of the directories holding them, to a time derived
from the content: the same bytes get the same time on every machine, other
bytes another one (at nanosecond resolution), and every time lies between
2001 and 2010. It reads git's index for content hashes, so it needs no
history (shallow clones work) and reads only files that differ from the
index. Symbolic links, submodules and untracked files are left alone.
Outside a git work tree, DIR's regular files are hashed, .git left out.

Run it after the checkout and before the go commands. It changes times,
never content; tools that go by modification time (make, rsync -u) see the
derived times. It prints a one-line summary for each DIR.`,
		Run: func(env *command.Env) error {
			dirs := env.Args
			if len(dirs) == 0 {
				top, err := gitWorkTree()
				if err != nil {
					return failed(err)
				}
				dirs = []string{top}
			}
			for _, dir := range dirs {
				res, err := mtimes.Set(env.Context(), dir)
				if err != nil {
					return failed(err)
				}
				fmt.Println(res)
			}
			return nil
		},
	}
}

// gitWorkTree returns the top of the git work tree holding the current
// directory.
func gitWorkTree() (string, error) {
	top, err := mtimes.WorkTree(".")
	if err != nil {
		return "", err
	}
	if top == "" {
		wd, _ := os.Getwd()
		return "", fmt.Errorf("canonical-mtimes: %s is not in a git work tree; name the directory (canonical-mtimes DIR)", wd)
	}
	return top, nil
}
