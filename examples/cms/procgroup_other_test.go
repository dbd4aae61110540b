//go:build !unix

package main

import "os/exec"

func ownProcessGroup(*exec.Cmd) {}

func killGroup(*exec.Cmd) bool { return false }
