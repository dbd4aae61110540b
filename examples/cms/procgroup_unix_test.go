//go:build unix

package main

import (
	"errors"
	"os/exec"
	"syscall"
)

// ownProcessGroup makes cmd the leader of a new process group, which its
// children join.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killGroup kills what is left of cmd's process group once cmd has exited,
// reporting whether anything was.
func killGroup(cmd *exec.Cmd) bool {
	pgid := cmd.Process.Pid
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return true
}
