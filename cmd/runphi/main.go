// Command runphi is the operator's tool for partitioned containers: it builds
// images for them and inspects what the shim and the hypervisor hold.
//
// Each subcommand lives in its own file and registers itself from an init
// function, so adding one means adding one file:
//
//	func init() {
//		register(&command{
//			name:    "ledger",
//			summary: "show the resource ledger",
//			run:     runLedger,
//		})
//	}
//
// A command's run gets the arguments after its name and the process's
// stdout/stderr; returning a usageError prints the command's usage and exits
// 2, any other error exits 1.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// version is set at link time: -ldflags "-X main.version=…".
var version = "dev"

// command is one subcommand of runphi.
type command struct {
	name    string // the word on the command line
	summary string // one line for the command list
	usage   string // the synopsis, without "runphi "
	run     func(env *cmdEnv, args []string) error
}

// cmdEnv is what a command may touch besides its arguments; tests swap the
// writers.
type cmdEnv struct {
	stdout, stderr io.Writer
}

// commands holds every registered subcommand by name. It is written only by
// init functions, before main runs.
var commands = map[string]*command{}

// register adds c to the subcommands; a duplicate name is a programming
// error caught at start-up.
func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("runphi: subcommand registered twice: " + c.name)
	}
	commands[c.name] = c
}

// usageError marks a command-line mistake: the command's usage is printed
// and runphi exits 2, as flag.ExitOnError would.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCoder is an error that chooses runphi's exit status (a documented
// code other than 1, such as 3 for "no such cell"); its message is printed
// like any other error's.
type exitCoder interface{ ExitCode() int }

func init() {
	register(&command{name: "help", summary: "show help for a command", usage: "help [COMMAND]", run: runHelp})
}

func main() {
	os.Exit(run(&cmdEnv{stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:]))
}

// run dispatches args to a subcommand and returns the exit code.
func run(env *cmdEnv, args []string) int {
	if len(args) == 0 {
		printCommands(env.stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		printCommands(env.stdout)
		return 0
	case "-v", "-version", "--version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(env.stderr, "runphi: unknown command %q\n\n", name)
		printCommands(env.stderr)
		return 2
	}
	err := c.run(env, args[1:])
	var (
		ue *usageError
		ec exitCoder
	)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(env.stderr, "runphi %s: %s\nusage: runphi %s\n", c.name, ue.msg, c.usage)
		return 2
	case errors.As(err, &ec):
		fmt.Fprintf(env.stderr, "runphi %s: %v\n", c.name, err)
		return ec.ExitCode()
	default:
		fmt.Fprintf(env.stderr, "runphi %s: %v\n", c.name, err)
		return 1
	}
}

func runHelp(env *cmdEnv, args []string) error {
	switch len(args) {
	case 0:
		printCommands(env.stdout)
		return nil
	case 1:
		c, ok := commands[args[0]]
		if !ok {
			return usagef("unknown command %q", args[0])
		}
		// Every command prints its flags for -h.
		return c.run(env, []string{"-h"})
	default:
		return usagef("help takes at most one command")
	}
}

func printCommands(w io.Writer) {
	fmt.Fprintf(w, "usage: runphi COMMAND [ARGS]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'runphi help COMMAND' for a command's flags.\n")
}

// newFlagSet returns a flag set that reports errors instead of exiting and
// prints its usage to env.stderr on -h.
func newFlagSet(env *cmdEnv, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "usage: runphi %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parseInterspersed parses flags that may come before, between or after the
// positional arguments ("image build DIR -o OUT"), which the flag package
// alone stops at. "--" ends flag parsing. It returns the positional
// arguments. Flag errors have already been printed by the flag set, so they
// come back as a usageError.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%v", err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse consumed a "--" if rest follows one: everything after it
		// is positional.
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// splitCommand parses a command line given as a JSON array
// (`["/bin/sh","-c","x"]`) or as words separated by spaces.
func splitCommand(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		var out []string
		if err := json.Unmarshal([]byte(s), &out); err != nil {
			return nil, fmt.Errorf("not a JSON array of strings: %w", err)
		}
		return out, nil
	}
	return strings.Fields(s), nil
}
