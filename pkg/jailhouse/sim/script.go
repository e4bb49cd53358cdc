package sim

// Scripted inmates. A payload whose first line is "#!runphi-sim" is parsed
// at CELL_START into a flat program (loops become jumps), and the program is
// run lazily as a timeline: its program counter, loop counters and the time
// of its next instruction live in the state file, and every transaction
// advances it to "now". No process runs the inmate, so a shim being killed
// changes nothing about it.

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ScriptMagic is the first line of a scripted inmate payload.
const ScriptMagic = "#!runphi-sim"

// Shutdown policies of a scripted inmate (the on-shutdown command): how it
// answers the hypervisor's SHUTDOWN_REQUEST.
const (
	PolicyApprove = "approve"
	PolicyDeny    = "deny"
	PolicyIgnore  = "ignore"
)

// Limits that keep a runaway script from hanging or bloating the simulator.
const (
	// maxStepsPerAdvance bounds the instructions one cell executes per
	// transaction. A loop without sleeps never lets simulated time pass,
	// so without the bound it would never return; with it, the inmate
	// simply falls behind and catches up over later transactions.
	maxStepsPerAdvance = 10000
	// maxScriptSize bounds what is kept of a script image in the state
	// file; a longer script crashes the inmate at start.
	maxScriptSize = 256 << 10
)

type opKind string

const (
	opPrint  opKind = "print"
	opSleep  opKind = "sleep"
	opExit   opKind = "exit"
	opFail   opKind = "fail"
	opLock   opKind = "lock"
	opUnlock opKind = "unlock"
	opPolicy opKind = "on-shutdown"
	opLoop   opKind = "loop"
	opEnd    opKind = "end"
	opEcho   opKind = "echo"
)

// op is one instruction of a parsed script.
type op struct {
	Kind opKind `json:"k"`
	Line int    `json:"l"`           // 1-based line in the script, for messages
	Text string `json:"t,omitempty"` // print: the text; on-shutdown: the policy
	// Dur is the sleep duration in nanoseconds.
	Dur int64 `json:"d,omitempty"`
	// N is the loop count, or for echo the number of lines; -1 means
	// forever.
	N int `json:"n,omitempty"`
	// Jump is, for loop, the index just after its end (taken when the
	// count is 0); for end, the index of its loop.
	Jump int `json:"j,omitempty"`
	// line is a print's Text with its newline, made on first use and kept
	// for the rest of the transaction (the state is decoded anew for each
	// one): a flooding inmate prints thousands of lines per transaction in
	// the shim's own process, and a copy per line was most of its garbage.
	// It is not part of the state file, whose format stays as it was.
	line string
}

// ScriptError is a script that cannot be run. The inmate "crashes" with it at
// CELL_START: the hypervisor cannot know what a payload means, so a bad
// script is not a driver error.
type ScriptError struct {
	Line int // 1-based; 0 when the error is about the whole script
	Msg  string
}

func (e *ScriptError) Error() string {
	if e.Line == 0 {
		return "runphi-sim script: " + e.Msg
	}
	return fmt.Sprintf("runphi-sim script line %d: %s", e.Line, e.Msg)
}

// CheckScript parses payload as CELL_START would if a cell started in it,
// for tools that refuse a broken script before it is ever loaded (`runphi
// image build`). It returns nil for a payload that is not a script, which
// the simulator runs silently, and otherwise the *ScriptError the inmate
// would crash with.
func CheckScript(payload []byte) error {
	if !isScript(payload) {
		return nil
	}
	_, err := parseScript(payload)
	return err
}

// isScript reports whether an image payload is a scripted inmate.
func isScript(data []byte) bool {
	first, _, _ := bytes.Cut(cString(data), []byte("\n"))
	return string(bytes.TrimRight(first, " \t\r")) == ScriptMagic
}

// cString cuts data at its first NUL byte: "jailhouse cell load -s" passes
// the string's terminating NUL, and an inmate reads its payload as C text.
func cString(data []byte) []byte {
	if i := bytes.IndexByte(data, 0); i >= 0 {
		return data[:i]
	}
	return data
}

// parseScript parses a script payload into a flat program.
func parseScript(data []byte) ([]op, error) {
	data = cString(data)
	if len(data) > maxScriptSize {
		return nil, &ScriptError{Msg: fmt.Sprintf("script is %d bytes, more than the %d the simulator runs", len(data), maxScriptSize)}
	}
	lines := strings.Split(string(data), "\n")
	if len(lines) == 0 || strings.TrimRight(lines[0], " \t\r") != ScriptMagic {
		return nil, &ScriptError{Line: 1, Msg: fmt.Sprintf("first line is not %q", ScriptMagic)}
	}
	var prog []op
	var open []int // indexes of loop ops waiting for their end
	for i, raw := range lines[1:] {
		lineNo := i + 2
		line := strings.TrimRight(raw, " \t\r")
		body := strings.TrimLeft(line, " \t")
		if body == "" || body[0] == '#' {
			continue
		}
		cmd, arg, _ := strings.Cut(body, " ")
		if c, a, ok := strings.Cut(body, "\t"); ok && len(c) < len(cmd) {
			cmd, arg = c, a
		}
		bad := func(format string, args ...any) error {
			return &ScriptError{Line: lineNo, Msg: fmt.Sprintf(format, args...)}
		}
		noArg := func(k opKind) error {
			if strings.TrimSpace(arg) != "" {
				return bad("%s takes no argument, got %q", k, strings.TrimSpace(arg))
			}
			prog = append(prog, op{Kind: k, Line: lineNo})
			return nil
		}
		var err error
		switch opKind(cmd) {
		case opPrint:
			// Keep the text verbatim after the one separator, so
			// indentation inside the text survives.
			prog = append(prog, op{Kind: opPrint, Line: lineNo, Text: arg})
		case opSleep:
			d, perr := time.ParseDuration(strings.TrimSpace(arg))
			switch {
			case perr != nil:
				err = bad("sleep: %q is not a Go duration (such as 500ms or 2s)", strings.TrimSpace(arg))
			case d < 0:
				err = bad("sleep: negative duration %s", d)
			default:
				prog = append(prog, op{Kind: opSleep, Line: lineNo, Dur: int64(d)})
			}
		case opExit, opFail, opLock, opUnlock:
			err = noArg(opKind(cmd))
		case opEcho:
			switch a := strings.TrimSpace(arg); a {
			case "":
				prog = append(prog, op{Kind: opEcho, Line: lineNo, N: 1})
			case "forever":
				prog = append(prog, op{Kind: opEcho, Line: lineNo, N: -1})
			default:
				err = bad("echo takes no argument or forever, got %q", a)
			}
		case opPolicy:
			switch p := strings.TrimSpace(arg); p {
			case PolicyApprove, PolicyDeny, PolicyIgnore:
				prog = append(prog, op{Kind: opPolicy, Line: lineNo, Text: p})
			default:
				err = bad("on-shutdown: %q is not approve, deny or ignore", p)
			}
		case opLoop:
			a := strings.TrimSpace(arg)
			n := -1
			if a != "forever" {
				v, perr := strconv.Atoi(a)
				if perr != nil || v < 0 {
					err = bad("loop: %q is not a count (0 or more) or forever", a)
					break
				}
				n = v
			}
			open = append(open, len(prog))
			prog = append(prog, op{Kind: opLoop, Line: lineNo, N: n})
		case opEnd:
			if strings.TrimSpace(arg) != "" {
				err = bad("end takes no argument, got %q", strings.TrimSpace(arg))
				break
			}
			if len(open) == 0 {
				err = bad("end without loop")
				break
			}
			start := open[len(open)-1]
			open = open[:len(open)-1]
			prog = append(prog, op{Kind: opEnd, Line: lineNo, Jump: start})
			prog[start].Jump = len(prog)
		default:
			err = bad("unknown command %q", cmd)
		}
		if err != nil {
			return nil, err
		}
	}
	if len(open) > 0 {
		start := prog[open[len(open)-1]]
		return nil, &ScriptError{Line: start.Line, Msg: "loop without end"}
	}
	return prog, nil
}

// program is the run state of a scripted inmate, persisted in the cell.
type program struct {
	Ops []op `json:"ops"`
	PC  int  `json:"pc"`
	// Loops holds the remaining iterations of each open loop, innermost
	// last; -1 is forever.
	Loops []int `json:"loops,omitempty"`
	// At is when the instruction at PC runs, in Unix nanoseconds.
	At int64 `json:"at"`
	// Out is console output of the instruction at PC that the console has
	// not taken yet: the inmate waits until it has.
	Out string `json:"out,omitempty"`
	// Echoed counts the lines the echo at PC has echoed.
	Echoed int `json:"echoed,omitempty"`
	// Line is console input read but not yet ended by a newline; SkipLF
	// says the last line ended in '\r', so a '\n' right after it belongs
	// to it.
	Line   string `json:"line,omitempty"`
	SkipLF bool   `json:"skip_lf,omitempty"`
}

// done reports whether the program ran off its end. The inmate then idles:
// the cell stays in its state (running) until someone stops it, as a
// bare-metal inmate that returned into a halt loop would.
func (p *program) done() bool { return p.PC >= len(p.Ops) }

// wake returns when run, called at any time after now, would next execute
// an instruction (Unix nanoseconds), and whether time is all it waits for.
// A program whose next instruction is due at now or earlier (behind its
// schedule, or retrying: output the console did not take, input that has
// not come, both of which set At to the time of the last try) is not
// timed, nor is one that is done: only running it tells what it does. now
// is the time the program was last run at.
func (p *program) wake(now time.Time) (at int64, timed bool) {
	if p.done() || p.Out != "" || p.At <= now.UnixNano() {
		return 0, false
	}
	return p.At, true
}

// inmate is what a running program acts on: the cell, seen from inside.
type inmate interface {
	// write puts console output out and returns how much the console
	// took; the inmate waits for the rest.
	write(s string) int
	// readLine takes one line of console input, if a whole one is there.
	readLine(p *program) (string, bool)
	// state carries out exit, fail, lock and unlock.
	state(k opKind)
	setPolicy(policy string)
	// sleep accounts a sleep (the timer interrupt that ends it).
	sleep()
}

// run executes the program until its next instruction lies after now, it
// ends (exit and fail end it too), it waits for the console (output the
// console cannot take yet, input that has not come), or it used up its
// step budget. A waiting instruction is retried by the next transaction.
func (p *program) run(now time.Time, in inmate) {
	t := now.UnixNano()
	for steps := 0; steps < maxStepsPerAdvance && !p.done() && p.At <= t; steps++ {
		o := &p.Ops[p.PC]
		if p.Out != "" {
			n := in.write(p.Out)
			p.Out = p.Out[n:]
			if p.Out != "" {
				// The console is full: time passes while the
				// inmate waits, so later sleeps count from now.
				p.At = t
				return
			}
			if o.Kind == opEcho {
				p.Echoed++
				if o.N < 0 || p.Echoed < o.N {
					continue // echo the next line
				}
				p.Echoed = 0
			}
			p.PC++
			continue
		}
		switch o.Kind {
		case opPrint:
			if o.line == "" {
				o.line = o.Text + "\n"
			}
			p.Out = o.line
			continue // written at the top, then the PC moves on
		case opEcho:
			line, ok := in.readLine(p)
			if !ok {
				p.At = t // waiting for input
				return
			}
			p.Out = line + "\n"
			continue
		}
		p.PC++
		switch o.Kind {
		case opSleep:
			p.At += o.Dur
			in.sleep()
		case opExit, opFail:
			// The inmate halts its CPUs: nothing after this runs.
			in.state(o.Kind)
			p.PC = len(p.Ops)
			return
		case opLock, opUnlock:
			in.state(o.Kind)
		case opPolicy:
			in.setPolicy(o.Text)
		case opLoop:
			if o.N == 0 {
				p.PC = o.Jump
				continue
			}
			p.Loops = append(p.Loops, o.N)
		case opEnd:
			top := len(p.Loops) - 1
			if p.Loops[top] > 0 {
				p.Loops[top]--
			}
			if p.Loops[top] != 0 {
				p.PC = o.Jump + 1 // back to the body
			} else {
				p.Loops = p.Loops[:top]
			}
		}
	}
}
