package daemon

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// process is a started worker process, as the supervisor sees it
// (tableflip's env.newProc -> process): production starts the binary,
// tests start fakes that speak the channel protocol.
type process interface {
	Pid() int
	Signal(sig os.Signal) error
	// Wait waits for the process to exit and says how it ended, for logs
	// and status ("exit status 1", "killed by signal SIGKILL").
	Wait() string
}

// startProc starts exe with arg. extra become its descriptors 3, 4, ...;
// cred (may be nil) is the identity it runs as.
type startProc func(exe string, arg []string, extra []*os.File, cred *syscall.Credential) (process, error)

// osProc is a process started by the operating system.
type osProc struct{ cmd *exec.Cmd }

func startOSProc(exe string, arg []string, extra []*os.File, cred *syscall.Credential) (process, error) {
	cmd := exec.Command(exe, arg...)
	cmd.Env = workerEnv()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.ExtraFiles = extra
	// Own process group: a Ctrl-C on the terminal reaches the supervisor,
	// which then drains the workers, rather than killing them all at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return osProc{cmd}, nil
}

func (p osProc) Pid() int                   { return p.cmd.Process.Pid }
func (p osProc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

func (p osProc) Wait() string {
	err := p.cmd.Wait()
	return exitString(p.cmd.ProcessState, err)
}

// kill sends SIGKILL to p.
func kill(p process) { p.Signal(syscall.SIGKILL) }

// exitString describes how a process ended, for logs and status.
func exitString(ps *os.ProcessState, err error) string {
	if ps == nil {
		if err != nil {
			return err.Error()
		}
		return "unknown"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return "killed by signal " + unixSignalName(ws.Signal())
	}
	return fmt.Sprintf("exit status %d", ps.ExitCode())
}

func unixSignalName(sig syscall.Signal) string {
	names := map[syscall.Signal]string{syscall.SIGKILL: "SIGKILL", syscall.SIGTERM: "SIGTERM", syscall.SIGSEGV: "SIGSEGV",
		syscall.SIGABRT: "SIGABRT", syscall.SIGBUS: "SIGBUS", syscall.SIGPIPE: "SIGPIPE", syscall.SIGINT: "SIGINT"}
	if n, ok := names[sig]; ok {
		return n
	}
	return sig.String()
}
