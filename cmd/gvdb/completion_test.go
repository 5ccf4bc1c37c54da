package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCompletion: the scripts cover every command and each command's own
// flags, bash completes commands and flags when it runs the script, and
// __runs lists the store's runs.
func TestCompletion(t *testing.T) {
	bash, _, code := gvdb(t, "completion", "bash")
	if code != exitOK {
		t.Fatalf("completion bash: code %d", code)
	}
	fish, _, _ := gvdb(t, "completion", "fish")
	zsh, _, _ := gvdb(t, "completion", "zsh")
	if !strings.HasPrefix(zsh, "#compdef gvdb") || !strings.Contains(zsh, "bashcompinit") {
		t.Errorf("zsh script: %.200s", zsh)
	}
	for _, name := range commandNames() {
		if !strings.Contains(bash, "    "+name+") ") || !strings.Contains(fish, "-a "+name+" ") {
			t.Errorf("command %s missing from a script", name)
		}
	}
	for _, want := range []string{"--full-snapshot-every", "--snapshot-examples", "--svrg-every"} {
		if !strings.Contains(fish, "'__fish_seen_subcommand_from train' -l "+want[2:]+" ") {
			t.Errorf("fish: train %s missing", want)
		}
	}
	if _, errs, code := gvdb(t, "completion", "tcsh"); code != exitUsage || !strings.Contains(errs, "bash, zsh or fish") {
		t.Errorf("completion tcsh: code %d, %q", code, errs)
	}

	dir := synthStore(t)
	out, _, code := gvdb(t, "__runs", "--db", dir)
	if code != exitOK || strings.TrimSpace(out) != "syn" {
		t.Errorf("__runs: code %d, %q", code, out)
	}

	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	script := bash + `
COMP_WORDS=(gvdb tra); COMP_CWORD=1; _gvdb; echo "1:${COMPREPLY[*]}"
COMP_WORDS=(gvdb train --full); COMP_CWORD=2; _gvdb; echo "2:${COMPREPLY[*]}"
COMP_WORDS=(gvdb report --ru); COMP_CWORD=2; _gvdb; echo "3:${COMPREPLY[*]}"
`
	got, err := exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, got)
	}
	for _, want := range []string{"1:train", "2:--full-snapshot-every", "3:--runs"} {
		if !strings.Contains(string(got), want+"\n") {
			t.Errorf("bash completion: want %q in\n%s", want, got)
		}
	}
}
