package integration

// The README's deploy steps, as TestDeployAsDocumented (deploy_test.go,
// build tag integration) runs them. This file has no build tag: the
// extraction, the command shapes and the placeholders below are shared by
// the deploy test and by TestReadmeDeployMatchesTest, which needs neither
// root nor containers and fails as soon as the README and the deploy test
// drift apart.
//
// In README.md's "## Deploy" section every ```sh block is marked by an HTML
// comment on the line right before it naming where it runs:
//
//	<!-- deploy:jump -->      the jump host (the lifeline-bastion container)
//	<!-- deploy:pi -->        the Pi (the lifeline-agent container)
//	<!-- deploy:operator -->  an operator's computer (stock ssh, a temporary home)
//
// A block is a list of commands (a heredoc or a line ending in \ belongs to
// its command; comments are for readers and are dropped). Each command,
// once its placeholders are substituted, must match one of deployKinds:
// the shapes the deploy test knows how to run.

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Where the README's deploy blocks run.
const (
	placeJump     = "jump"
	placePi       = "pi"
	placeOperator = "operator"
)

// deployOrder is the order of the README's marked blocks: the jump host,
// the Pi up to pairing, the jump host taking the agent's line, the Pi
// started, the operator's files, the operator's logins.
var deployOrder = []string{placeJump, placePi, placeJump, placePi, placeOperator, placeOperator}

// deployPlaceholder is a part of the README's commands a reader replaces.
// Given ones are the reader's own values (the test substitutes its own);
// a placeholder with producedBy is a line an earlier command prints on
// another machine, which the reader copies (and so does the test).
type deployPlaceholder struct {
	token, what string
	producedBy  string // a deployKinds name, "" for the reader's own values
}

// deployPlaceholders is the documented set (README.md, "## Deploy").
var deployPlaceholders = []deployPlaceholder{
	{token: "203.0.113.10", what: "the jump host's public address"},
	{token: "lifeline-bastion_VERSION_amd64.deb", what: "the jump host's package"},
	{token: "lifeline-agent_VERSION_armhf.deb", what: "the Pi's package"},
	{token: "<Account SID>", what: "the Twilio account SID"},
	{token: "<Auth Token>", what: "the Twilio auth token"},
	{token: "+15005550006", what: "the Twilio number texts come from"},
	{token: "+447700900123", what: "the phone to text"},
	{token: "<operator key>", what: "an operator's public key"},
	{token: "<bastion known_hosts line>", what: "the jump host's known_hosts line", producedBy: "bastion-hostkey"},
	{token: "<agents line>", what: "the agent's line for the agents file", producedBy: "agent-pair"},
	{token: "<pi known_hosts line>", what: "the Pi's known_hosts line", producedBy: "pi-hostkey"},
}

// deployKind is a command shape the deploy test knows how to run.
type deployKind struct {
	name, place string
	re          *regexp.Regexp // matches the whole substituted command
}

func kind(name, place, re string) deployKind {
	return deployKind{name: name, place: place, re: regexp.MustCompile(`\A` + re + `\z`)}
}

const (
	quoted  = `'[^'\n]+'`
	debFile = `\./lifeline-%s_[^ /'\n]+\.deb`
)

// deployKinds are the commands TestDeployAsDocumented runs. All but the
// operator's two logins run as written, as root (sudo is a shell function
// that runs its arguments: the test tree has no sudo, and its commands are
// root's already); the logins get BatchMode, StrictHostKeyChecking yes for
// the Pi's hop and a command to run there.
var deployKinds = []deployKind{
	kind("bastion-install", placeJump, `sudo apt install `+fmt.Sprintf(debFile, "bastion")),
	kind("bastion-env", placeJump, `sudo tee -a /etc/lifeline/bastion\.env <<'EOF'\n(?:[A-Z][A-Z_]*=[^\n]*\n)+EOF`),
	kind("bastion-key-file", placeJump, `echo `+quoted+` \| sudo tee -a /etc/lifeline/(?:operators|agents)`),
	kind("bastion-systemctl", placeJump, `sudo systemctl (?:enable --now|reload) lifeline-bastion`),
	kind("bastion-hostkey", placeJump, `sudo lifeline-bastion hostkey --host [^\s']+`),
	kind("bastion-doctor", placeJump, `sudo lifeline-bastion doctor`),

	kind("agent-install", placePi, `sudo apt install `+fmt.Sprintf(debFile, "agent")),
	kind("agent-env", placePi, `echo 'LIFELINE_[A-Z_]+=[^'\n]*' \| sudo tee -a /etc/lifeline/agent\.env`),
	kind("agent-known-hosts", placePi, `echo `+quoted+` \| sudo tee /etc/lifeline/known_hosts`),
	kind("agent-pair", placePi, `sudo lifeline-agent pair`),
	kind("pi-systemctl", placePi, `sudo systemctl enable --now (?:ssh|lifeline-agent)`),
	kind("pi-authorized-keys", placePi, `mkdir -p ~/\.ssh && echo `+quoted+` >> ~/\.ssh/authorized_keys`),
	kind("pi-hostkey", placePi, `echo "pi \$\(cat /etc/ssh/ssh_host_ed25519_key\.pub\)"`),
	kind("agent-doctor", placePi, `sudo lifeline-agent doctor`),

	kind("operator-known-hosts", placeOperator, `echo `+quoted+` >> ~/\.ssh/known_hosts`),
	kind("operator-config", placeOperator, `cat >> ~/\.ssh/config <<'EOF'\n(?:[^\n]*\n)+EOF`),
	kind("operator-jump", placeOperator, `ssh -J bastion pi`),
	kind("operator-status", placeOperator, `ssh bastion status`),
}

// deployRequired are the kinds the deploy test's assertions rest on: the
// README must keep them.
var deployRequired = []string{
	"bastion-install", "bastion-env", "bastion-key-file", "bastion-systemctl", "bastion-hostkey", "bastion-doctor",
	"agent-install", "agent-env", "agent-known-hosts", "agent-pair", "pi-systemctl", "pi-authorized-keys", "pi-hostkey", "agent-doctor",
	"operator-known-hosts", "operator-config", "operator-jump", "operator-status",
}

// classifyDeploy is the kind of a substituted command run at place.
func classifyDeploy(place, cmd string) (deployKind, error) {
	for _, k := range deployKinds {
		if k.place == place && k.re.MatchString(cmd) {
			return k, nil
		}
	}
	return deployKind{}, fmt.Errorf("%s: %q is not a command TestDeployAsDocumented knows how to run: add its shape to deployKinds in integration/readme_deploy_test.go and make the deploy test run it", place, cmd)
}

// deployBlock is one marked ```sh block of the Deploy section.
type deployBlock struct {
	place string
	line  int // of its marker in README.md
	text  string
}

var (
	deployMarker = regexp.MustCompile(`^<!-- deploy:([a-z]+) -->$`)
	anyMarker    = regexp.MustCompile(`<!--\s*deploy`)
)

// readDeployBlocks returns the marked blocks of README.md's "## Deploy"
// section, in order. A ```sh block there without a marker, a marker not
// right before a ```sh block, an unknown place or an unclosed block is an
// error.
func readDeployBlocks(readme string) ([]deployBlock, error) {
	lines := strings.Split(readme, "\n")
	start := slices.Index(lines, "## Deploy")
	if start < 0 {
		return nil, fmt.Errorf(`README.md has no "## Deploy" section`)
	}
	var blocks []deployBlock
	var errs []string
	for i := start + 1; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "## ") {
			break
		}
		m := deployMarker.FindStringSubmatch(l)
		switch {
		case m != nil:
			if !slices.Contains([]string{placeJump, placePi, placeOperator}, m[1]) {
				errs = append(errs, fmt.Sprintf("README.md:%d: unknown place %q (jump, pi or operator)", i+1, m[1]))
			}
			if i+1 >= len(lines) || lines[i+1] != "```sh" {
				errs = append(errs, fmt.Sprintf("README.md:%d: the marker is not right before a ```sh block", i+1))
				continue
			}
			end := i + 2
			for end < len(lines) && lines[end] != "```" {
				end++
			}
			if end == len(lines) {
				return nil, fmt.Errorf("README.md:%d: the ```sh block is not closed", i+2)
			}
			blocks = append(blocks, deployBlock{place: m[1], line: i + 1, text: strings.Join(lines[i+2:end], "\n")})
			i = end
		case anyMarker.MatchString(l):
			errs = append(errs, fmt.Sprintf("README.md:%d: malformed marker %q (want <!-- deploy:PLACE -->)", i+1, l))
		case strings.HasPrefix(l, "```sh"):
			errs = append(errs, fmt.Sprintf("README.md:%d: a ```sh block of the Deploy section without a <!-- deploy:PLACE --> marker: the deploy test would not run it", i+1))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return blocks, nil
}

// deployCommand is one command of a block, in the README's form (comments
// dropped, placeholders not substituted).
type deployCommand struct {
	place string
	line  int // in README.md
	text  string
}

var heredoc = regexp.MustCompile(`<<-?'?([A-Za-z_]+)'?`)

// commands splits a block into its commands.
func (b deployBlock) commands() ([]deployCommand, error) {
	lines := strings.Split(b.text, "\n")
	var cmds []deployCommand
	for i := 0; i < len(lines); i++ {
		first := i
		l := stripComment(lines[i])
		if strings.TrimSpace(l) == "" {
			continue
		}
		for strings.HasSuffix(l, `\`) && i+1 < len(lines) {
			i++
			l = strings.TrimSuffix(l, `\`) + "\n" + stripComment(lines[i])
		}
		if m := heredoc.FindStringSubmatch(l); m != nil {
			end := i + 1
			for end < len(lines) && lines[end] != m[1] {
				end++
			}
			if end == len(lines) {
				return nil, fmt.Errorf("README.md:%d: heredoc %s is not closed", b.line+2+first, m[1])
			}
			l += "\n" + strings.Join(lines[i+1:end+1], "\n")
			i = end
		}
		cmds = append(cmds, deployCommand{place: b.place, line: b.line + 2 + first, text: l})
	}
	return cmds, nil
}

// stripComment drops a shell comment (a # starting a word outside quotes)
// and the spaces before it.
func stripComment(line string) string {
	var q rune
	for i, r := range line {
		switch {
		case q != 0:
			if r == q {
				q = 0
			}
		case r == '\'' || r == '"':
			q = r
		case r == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return strings.TrimRight(line[:i], " \t")
		}
	}
	return line
}

var leftover = regexp.MustCompile(`<[A-Za-z][^<>'\n]*>|\bVERSION\b`)

// substituteDeploy replaces every placeholder of cmd with its value; a
// placeholder left (one without a value, or one the README uses that
// deployPlaceholders does not list) is an error.
func substituteDeploy(cmd string, values map[string]string) (string, error) {
	var pairs []string
	for _, p := range deployPlaceholders {
		if v, ok := values[p.token]; ok {
			pairs = append(pairs, p.token, v)
		}
	}
	out := strings.NewReplacer(pairs...).Replace(cmd)
	// Only what the README wrote can be left over: a value (a key line,
	// a version) is not checked.
	var left []string
	for _, p := range deployPlaceholders {
		if _, ok := values[p.token]; !ok && strings.Contains(cmd, p.token) {
			left = append(left, p.token)
		}
	}
	for _, m := range leftover.FindAllString(cmd, -1) {
		if !slices.ContainsFunc(deployPlaceholders, func(p deployPlaceholder) bool { return strings.Contains(p.token, m) }) {
			left = append(left, m+" (not a documented placeholder)")
		}
	}
	if len(left) > 0 {
		return out, fmt.Errorf("placeholders not substituted in %q: %s", cmd, strings.Join(left, ", "))
	}
	return out, nil
}

// readmeDeploy reads ../README.md's deploy blocks.
func readmeDeploy(t testing.TB) []deployBlock {
	t.Helper()
	blocks, err := readDeployBlocks(readReadme(t))
	if err != nil {
		t.Fatal(err)
	}
	return blocks
}

func readReadme(t testing.TB) string {
	t.Helper()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(readme)
}

// checkDeployReadme is every way readme's deploy steps can drift from
// what TestDeployAsDocumented runs; it returns the problems found and the
// number of commands.
func checkDeployReadme(readme string) (problems []string, commands int) {
	blocks, err := readDeployBlocks(readme)
	if err != nil {
		return []string{err.Error()}, 0
	}
	var places []string
	for _, b := range blocks {
		places = append(places, b.place)
	}
	if !slices.Equal(places, deployOrder) {
		problems = append(problems, fmt.Sprintf("README.md's deploy blocks run at %v, the deploy test expects %v", places, deployOrder))
	}

	values := map[string]string{}
	for _, p := range deployPlaceholders {
		values[p.token] = "VALUE-OF-" + strings.Trim(p.token, "<>")
	}
	// Values of the shapes the real ones have.
	values["<bastion known_hosts line>"] = "[203.0.113.10]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDummy"
	values["<agents line>"] = `permitlisten="pi:22" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDummy lifeline-agent@pi`
	values["<pi known_hosts line>"] = "pi ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDummy root@pi"
	values["<operator key>"] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDummy alice@laptop"
	values["lifeline-bastion_VERSION_amd64.deb"] = "lifeline-bastion_0.0.0+test_amd64.deb"
	values["lifeline-agent_VERSION_armhf.deb"] = "lifeline-agent_0.0.0+test_amd64.deb"

	used := map[string]bool{}
	seen := map[string]bool{}
	for _, b := range blocks {
		cmds, err := b.commands()
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		if len(cmds) == 0 {
			problems = append(problems, fmt.Sprintf("README.md:%d: an empty deploy block", b.line))
		}
		for _, c := range cmds {
			commands++
			for _, p := range deployPlaceholders {
				if !strings.Contains(c.text, p.token) {
					continue
				}
				used[p.token] = true
				if p.producedBy != "" && !seen[p.producedBy] {
					problems = append(problems, fmt.Sprintf("README.md:%d: %s is used before the command that prints it (%s) ran", c.line, p.token, p.producedBy))
				}
			}
			sub, err := substituteDeploy(c.text, values)
			if err != nil {
				problems = append(problems, fmt.Sprintf("README.md:%d: %v", c.line, err))
			}
			k, err := classifyDeploy(c.place, sub)
			if err != nil {
				problems = append(problems, fmt.Sprintf("README.md:%d: %v", c.line, err))
				continue
			}
			seen[k.name] = true
		}
	}
	for _, p := range deployPlaceholders {
		if !used[p.token] {
			problems = append(problems, fmt.Sprintf("the placeholder %s (%s) is in deployPlaceholders but no deploy command uses it", p.token, p.what))
		}
	}
	for _, k := range deployRequired {
		if !seen[k] {
			problems = append(problems, fmt.Sprintf("README.md's deploy steps have no %s command, which TestDeployAsDocumented relies on", k))
		}
	}
	return problems, commands
}

// TestReadmeDeployMatchesTest keeps README.md's deploy steps and
// TestDeployAsDocumented together: the marked blocks come in the order the
// deploy test runs them, each substituted command is one it knows how to
// run, every placeholder is documented and substituted, and a line copied
// from another machine is used only after the command that prints it.
func TestReadmeDeployMatchesTest(t *testing.T) {
	problems, n := checkDeployReadme(readReadme(t))
	for _, p := range problems {
		t.Error(p)
	}
	t.Logf("%d commands, %d placeholders", n, len(deployPlaceholders))
}

// TestReadmeDeployDriftIsCaught edits the README in memory the ways it
// could drift and expects checkDeployReadme to say so.
func TestReadmeDeployDriftIsCaught(t *testing.T) {
	readme := readReadme(t)
	for _, tt := range []struct{ name, old, new, want string }{
		{"an unmarked block", "<!-- deploy:operator -->\n```sh\nssh -J", "```sh\nssh -J", "without a <!-- deploy:PLACE --> marker"},
		{"a place the test does not know", "<!-- deploy:operator -->\n```sh\nssh -J", "<!-- deploy:laptop -->\n```sh\nssh -J", `unknown place "laptop"`},
		{"a command the test cannot run", "sudo lifeline-agent pair ", "sudo lifeline-agent pubkey ", "not a command TestDeployAsDocumented knows"},
		{"a new placeholder", "LIFELINE_NAME=bastion", "LIFELINE_NAME=<your name>", "<your name> (not a documented placeholder)"},
		{"a required step gone", "sudo lifeline-agent doctor", "", "no agent-doctor command"},
		{"a copied line used too early", "echo '<bastion known_hosts line>' | sudo tee /etc/lifeline/known_hosts", "echo '<agents line>' | sudo tee /etc/lifeline/known_hosts", "used before the command that prints it"},
		{"blocks out of order", "<!-- deploy:jump -->\n```sh\necho '<agents line>'", "<!-- deploy:pi -->\n```sh\necho '<agents line>'", "the deploy test expects"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(readme, tt.old) {
				t.Fatalf("README.md has no %q to change", tt.old)
			}
			problems, _ := checkDeployReadme(strings.Replace(readme, tt.old, tt.new, 1))
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("no problem saying %q; got:\n%s", tt.want, strings.Join(problems, "\n"))
			}
		})
	}
}
