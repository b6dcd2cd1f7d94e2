package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The GitHub Action (action.yml, summary/action.yml) runs the scripts in
// scripts/action. No runner can be reached from a test, so actionRunner
// does what a runner does with a composite action of run steps: it sets
// the runner's variables (RUNNER_TEMP, GITHUB_ENV, GITHUB_PATH,
// GITHUB_STEP_SUMMARY, GITHUB_WORKSPACE, GITHUB_EVENT_NAME,
// GITHUB_EVENT_PATH, GITHUB_ACTION_PATH), evaluates the steps' env
// (${{ inputs.NAME }} with the inputs' defaults), runs each step's run line
// with bash as the runner does, and carries what a step writes to
// GITHUB_ENV and GITHUB_PATH into the later steps. Anything else in an
// action file fails the test, so that what is tested stays what runs.

// actionStep is a run step of a composite action.
type actionStep struct {
	name string
	env  [][2]string // name, value as written
	run  string
}

// actionFile is a parsed composite action.
type actionFile struct {
	dir      string            // GITHUB_ACTION_PATH
	defaults map[string]string // input -> default
	steps    []actionStep
}

// unquoteYAML returns the value of a plain or single-quoted YAML scalar.
func unquoteYAML(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'' {
		return strings.ReplaceAll(s[1:len(s)-1], "''", "'")
	}
	return s
}

// loadAction parses the subset of the action file syntax the action uses.
func loadAction(t *testing.T, path string) *actionFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	a := &actionFile{dir: filepath.Dir(path), defaults: map[string]string{}}
	var section, input, stepKey string
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " "))
		key, val, _ := strings.Cut(trimmed, ":")
		bad := func() { t.Fatalf("%s:%d: the test's runner does not understand %q", path, n, line) }
		switch {
		case indent == 0:
			section = key
		case section == "inputs" && indent == 2:
			input = key
			a.defaults[input] = ""
		case section == "inputs" && indent == 4:
			if key == "default" {
				a.defaults[input] = unquoteYAML(val)
			} else if key != "description" {
				bad()
			}
		case section == "runs" && indent == 2:
			if (key == "using" && unquoteYAML(val) != "composite") || (key != "using" && key != "steps") {
				bad()
			}
		case section == "runs" && indent == 4 && strings.HasPrefix(trimmed, "- name:"):
			a.steps = append(a.steps, actionStep{name: unquoteYAML(strings.TrimPrefix(trimmed, "- name:"))})
			stepKey = ""
		case section == "runs" && indent == 6 && len(a.steps) > 0:
			st := &a.steps[len(a.steps)-1]
			stepKey = key
			switch key {
			case "shell":
				if unquoteYAML(val) != "bash" {
					bad()
				}
			case "run":
				st.run = unquoteYAML(val)
			case "env":
			default:
				bad() // if:, uses:, working-directory: ... are not emulated
			}
		case section == "runs" && indent == 8 && stepKey == "env":
			st := &a.steps[len(a.steps)-1]
			st.env = append(st.env, [2]string{key, strings.TrimSpace(val)})
		case section == "name" || section == "description":
		default:
			bad()
		}
	}
	if len(a.steps) == 0 {
		t.Fatalf("%s: no steps", path)
	}
	return a
}

// actionRunner is one job on an emulated runner.
type actionRunner struct {
	t         *testing.T
	temp      string // RUNNER_TEMP
	workspace string // GITHUB_WORKSPACE
	files     map[string]string
	base      []string // the job's own environment
}

// newActionRunner starts a job with the given event, in workspace, with
// base as the job's environment (GITHUB_* and RUNNER_* are added).
func newActionRunner(t *testing.T, workspace, event, eventJSON string, base []string) *actionRunner {
	temp := t.TempDir()
	r := &actionRunner{t: t, temp: filepath.Join(temp, "runner-temp"), workspace: workspace, base: base, files: map[string]string{}}
	for _, f := range []struct{ v, name string }{
		{"GITHUB_ENV", "env"}, {"GITHUB_PATH", "path"}, {"GITHUB_STEP_SUMMARY", "step-summary.md"}, {"GITHUB_EVENT_PATH", "event.json"},
	} {
		r.files[f.v] = filepath.Join(temp, f.name)
	}
	if err := os.MkdirAll(r.temp, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFiles(t, temp, map[string]string{"env": "", "path": "", "step-summary.md": "", "event.json": eventJSON})
	r.base = append(r.base, "GITHUB_EVENT_NAME="+event, "GITHUB_ACTIONS=true", "CI=true", "GITHUB_REPOSITORY=owner/fleet")
	return r
}

// env is the environment of a step: the job's, the runner's variables,
// then what earlier steps wrote to GITHUB_ENV, and PATH with GITHUB_PATH's
// entries first.
func (r *actionRunner) env() []string {
	t := r.t
	env := append([]string(nil), r.base...)
	env = append(env, "RUNNER_TEMP="+r.temp, "GITHUB_WORKSPACE="+r.workspace)
	for k, v := range r.files {
		env = append(env, k+"="+v)
	}
	data, err := os.ReadFile(r.files["GITHUB_ENV"])
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSuffix(line, "\n")
		k, _, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.Contains(k, "<<") {
			t.Fatalf("GITHUB_ENV line %q: want NAME=value", line)
		}
		env = append(env, line)
	}
	path := os.Getenv("PATH")
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	data, err = os.ReadFile(r.files["GITHUB_PATH"])
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range strings.Fields(string(data)) {
		path = dir + string(os.PathListSeparator) + path
	}
	return append(env, "PATH="+path)
}

// getenv returns the value of name in the environment of the next step.
func (r *actionRunner) getenv(name string) string {
	v := ""
	for _, kv := range r.env() {
		if s, ok := strings.CutPrefix(kv, name+"="); ok {
			v = s
		}
	}
	return v
}

var inputRE = regexp.MustCompile(`\$\{\{\s*inputs\.([A-Za-z0-9_-]+)\s*\}\}`)

// uses runs the action's steps with the given inputs and returns their
// combined output. A failing step fails the test.
func (r *actionRunner) uses(a *actionFile, with map[string]string) string {
	r.t.Helper()
	return r.usesSteps(a, with, "")
}

// usesSteps is uses, running only the step named only if it is not "".
func (r *actionRunner) usesSteps(a *actionFile, with map[string]string, only string) string {
	t := r.t
	t.Helper()
	for name := range with {
		if _, ok := a.defaults[name]; !ok {
			t.Fatalf("action has no input %q", name)
		}
	}
	var all strings.Builder
	ran := false
	for _, st := range a.steps {
		if only != "" && st.name != only {
			continue
		}
		ran = true
		env := append(r.env(), "GITHUB_ACTION_PATH="+a.dir)
		for _, kv := range st.env {
			val := inputRE.ReplaceAllStringFunc(kv[1], func(m string) string {
				name := inputRE.FindStringSubmatch(m)[1]
				if v, ok := with[name]; ok {
					return v
				}
				if v, ok := a.defaults[name]; ok {
					return v
				}
				t.Fatalf("step %q: no input %q", st.name, name)
				return ""
			})
			if strings.Contains(val, "${{") {
				t.Fatalf("step %q: expression in %q not emulated", st.name, kv[1])
			}
			env = append(env, kv[0]+"="+val)
		}
		cmd := exec.Command("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", st.run)
		cmd.Dir = r.workspace
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		all.WriteString(string(out))
		if err != nil {
			t.Fatalf("step %q: %v\n%s", st.name, err, all.String())
		}
	}
	if !ran {
		t.Fatalf("no step %q", only)
	}
	return all.String()
}

// run runs a command of the job (a run step of the workflow) in dir.
func (r *actionRunner) run(dir string, args ...string) (string, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = r.env()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// summary returns what the job wrote to GITHUB_STEP_SUMMARY.
func (r *actionRunner) summary() string {
	data, err := os.ReadFile(r.files["GITHUB_STEP_SUMMARY"])
	if err != nil {
		r.t.Fatal(err)
	}
	return string(data)
}
