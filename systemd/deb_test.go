package systemd_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// debArch maps GOARCH to the Debian architecture of the packages.
var debArch = map[string]string{"amd64": "amd64", "arm64": "arm64", "arm": "armhf"}

// debVersion is the version the package tests build: a Debian version as
// it is, so the binaries' stamp and the packages' version are the same.
const debVersion = "1.2.3+test"

// debPackage is what the package tests know about one of the two packages.
type debPackage struct {
	pkg, role string
	units     []string
	libexec   []string // programs in /usr/lib/lifeline
	man       []string // man pages, as installed under /usr/share/man
}

var debPackages = []debPackage{
	{"lifeline-bastion", "bastion", []string{"lifeline-bastion.service", "lifeline-poweroff.path", "lifeline-poweroff.service"}, nil,
		[]string{"man1/lifeline-bastion.1.gz"}},
	{"lifeline-agent", "agent", []string{"lifeline-agent.service", "lifeline-netsetup.service"},
		[]string{"lifeline-linkcheck", "lifeline-jumpstart"}, []string{"man1/lifeline-agent.1.gz", "man8/lifeline-linkcheck.8.gz", "man8/lifeline-jumpstart.8.gz"}},
}

// programs are the package's binaries, as paths inside it.
func (p debPackage) programs() []string {
	out := []string{"usr/bin/" + p.pkg}
	for _, l := range p.libexec {
		out = append(out, "usr/lib/lifeline/"+l)
	}
	return out
}

// debBuilt holds the packages `make deb` built once per test run.
var debBuilt struct {
	once      sync.Once
	dir, arch string
	err       error
	out       []byte
}

// debs builds both packages for this machine's architecture with `make deb`
// (the path every user takes) once per test run, and returns the DIST folder
// and the Debian architecture. The packages are never installed.
func debs(t *testing.T) (dist, arch string) {
	t.Helper()
	need(t, "make")
	need(t, "go")
	need(t, "dpkg-deb")
	need(t, "help2man")
	arch, ok := debArch[runtime.GOARCH]
	if !ok || arch == "armhf" {
		t.Skipf("no DIST_PLATFORMS entry for GOARCH=%s", runtime.GOARCH)
	}
	debBuilt.once.Do(func() {
		dir, err := os.MkdirTemp("", "lifeline-deb-test-")
		if err != nil {
			debBuilt.err = err
			return
		}
		debBuilt.dir, debBuilt.arch = filepath.Join(dir, "dist"), arch
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		mk := exec.CommandContext(ctx, "make", "-s", "deb", "DIST="+debBuilt.dir, "VERSION="+debVersion,
			"DIST_PLATFORMS="+runtime.GOARCH+":"+arch)
		mk.Dir = repoRoot(t)
		debBuilt.out, debBuilt.err = mk.CombinedOutput()
	})
	if debBuilt.err != nil {
		t.Fatalf("make deb: %v\n%s", debBuilt.err, debBuilt.out)
	}
	return debBuilt.dir, debBuilt.arch
}

// debFile is the path of pkg's package in dist.
func debFile(dist, pkg, arch string) string {
	return filepath.Join(dist, pkg+"_"+debVersion+"_"+arch+".deb")
}

// builtBinaries is the folder of the binaries `make dist` built for the
// packages, next to them in DIST.
func builtBinaries(dist string) string {
	return filepath.Join(dist, "lifeline_"+debVersion+"_linux_"+runtime.GOARCH)
}

// entry is one line of `dpkg-deb -c`.
type entry struct{ mode, owner string }

func listDeb(t *testing.T, deb string) map[string]entry {
	t.Helper()
	out, err := exec.Command("dpkg-deb", "-c", deb).Output()
	require.NoError(t, err, "dpkg-deb -c")
	files := map[string]entry{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		require.GreaterOrEqual(t, len(f), 6, "dpkg-deb -c line %q", line)
		if strings.HasPrefix(f[0], "d") {
			continue
		}
		files[strings.TrimPrefix(f[len(f)-1], ".")] = entry{mode: f[0], owner: f[1]}
	}
	return files
}

// extract unpacks the package's files and its control files into temp dirs.
func extract(t *testing.T, deb string) (root, control string) {
	t.Helper()
	root, control = t.TempDir(), t.TempDir()
	require.NoError(t, exec.Command("dpkg-deb", "-x", deb, root).Run(), "dpkg-deb -x")
	require.NoError(t, exec.Command("dpkg-deb", "-e", deb, control).Run(), "dpkg-deb -e")
	return root, control
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	z, err := gzip.NewReader(f)
	require.NoError(t, err, "%s is not gzip", path)
	data, err := io.ReadAll(z)
	require.NoError(t, err)
	return string(data)
}

// TestDebPackages builds both packages for this machine's architecture with
// `make deb` (nfpm) and inspects them with dpkg-deb: file list, modes and
// owners, conffiles, control fields, maintainer scripts, changelog and man
// pages.
func TestDebPackages(t *testing.T) {
	dist, arch := debs(t)
	bin := builtBinaries(dist)
	for _, tt := range debPackages {
		t.Run(tt.pkg, func(t *testing.T) {
			t.Parallel()
			deb := debFile(dist, tt.pkg, arch)

			// Control fields.
			for field, want := range map[string]string{
				"Package": tt.pkg, "Version": debVersion, "Architecture": arch,
				"Depends": "systemd", "Section": "net", "Priority": "optional",
			} {
				got, err := exec.Command("dpkg-deb", "-f", deb, field).Output()
				require.NoError(t, err, "dpkg-deb -f %s", field)
				assert.Equal(t, want, strings.TrimSpace(string(got)), "control field %s", field)
			}
			for _, field := range []string{"Maintainer", "Description", "Installed-Size", "Homepage"} {
				got, err := exec.Command("dpkg-deb", "-f", deb, field).Output()
				require.NoError(t, err)
				assert.NotEmpty(t, strings.TrimSpace(string(got)), "control field %s", field)
			}

			// Contents: exactly these files, with these modes, all root-owned.
			doc := "/usr/share/doc/" + tt.pkg + "/"
			want := map[string]entry{
				"/usr/bin/" + tt.pkg:                      {"-rwxr-xr-x", "root/root"},
				"/usr/lib/sysusers.d/" + tt.pkg + ".conf": {"-rw-r--r--", "root/root"},
				"/etc/lifeline/" + tt.role + ".env":       {"-rw-------", "root/root"},
				doc + "README.md":                         {"-rw-r--r--", "root/root"},
				doc + "copyright":                         {"-rw-r--r--", "root/root"},
				doc + "changelog.gz":                      {"-rw-r--r--", "root/root"},
				"/usr/share/lintian/overrides/" + tt.pkg:  {"-rw-r--r--", "root/root"},
			}
			for _, u := range tt.units {
				want["/usr/lib/systemd/system/"+u] = entry{"-rw-r--r--", "root/root"}
			}
			for _, p := range tt.libexec {
				want["/usr/lib/lifeline/"+p] = entry{"-rwxr-xr-x", "root/root"}
			}
			for _, m := range tt.man {
				want["/usr/share/man/"+m] = entry{"-rw-r--r--", "root/root"}
			}
			assert.Equal(t, want, listDeb(t, deb))

			// conffiles: the env template, so local edits survive upgrades.
			conf, err := exec.Command("dpkg-deb", "-I", deb, "conffiles").Output()
			require.NoError(t, err, "dpkg-deb -I conffiles")
			assert.Equal(t, "/etc/lifeline/"+tt.role+".env\n", string(conf))

			// Extracted files are the repository's and the build's, byte for byte.
			root, ctl := extract(t, deb)
			same := map[string]string{
				"usr/bin/" + tt.pkg:                      filepath.Join(bin, tt.pkg),
				"etc/lifeline/" + tt.role + ".env":       tt.role + ".env",
				"usr/lib/sysusers.d/" + tt.pkg + ".conf": "lifeline.sysusers",
				"usr/share/doc/" + tt.pkg + "/README.md": "README.md",
				"usr/share/doc/" + tt.pkg + "/copyright": "packaging/" + tt.pkg + "/copyright",
				"usr/share/lintian/overrides/" + tt.pkg:  "packaging/" + tt.pkg + "/lintian-overrides",
			}
			for _, u := range tt.units {
				same["usr/lib/systemd/system/"+u] = u
			}
			for _, p := range tt.libexec {
				same["usr/lib/lifeline/"+p] = filepath.Join(bin, p)
			}
			for inDeb, src := range same {
				a, err := os.ReadFile(filepath.Join(root, inDeb))
				require.NoError(t, err)
				b, err := os.ReadFile(src)
				require.NoError(t, err)
				assert.True(t, bytes.Equal(a, b), "%s in the package differs from %s", inDeb, src)
			}
			for _, p := range tt.programs() {
				name := filepath.Base(p)
				ver, err := exec.Command(filepath.Join(root, p), "--version").CombinedOutput()
				require.NoError(t, err, "%s --version: %s", name, ver)
				assert.Equal(t, name+" "+debVersion+"\n", string(ver), "the packaged %s prints its stamped version", name)
			}
			sysusers, err := os.ReadFile(filepath.Join(root, "usr/lib/sysusers.d", tt.pkg+".conf"))
			require.NoError(t, err)
			assert.Regexp(t, `(?m)^u lifeline - `, string(sysusers), "the package declares the lifeline system user")

			// The Debian changelog: one entry for this (unreleased) version.
			changelog := gunzip(t, filepath.Join(root, "usr/share/doc", tt.pkg, "changelog.gz"))
			assert.True(t, strings.HasPrefix(changelog, "lifeline ("+debVersion+") unstable; urgency=medium\n"), "changelog starts:\n%s", changelog)
			assert.Regexp(t, `(?m)^ -- lifeline developers <[^>]+>  \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000$`, changelog)

			// Man pages: made from --help, every variable of the environment
			// table included.
			for i, m := range tt.man {
				page := gunzip(t, filepath.Join(root, "usr/share/man", m))
				prog := tt.programs()[i]
				name := filepath.Base(prog)
				section := strings.TrimPrefix(filepath.Dir(m), "man")
				assert.Contains(t, page, `.TH `+strings.ToUpper(name)+` "`+section+`"`, "%s: title", m)
				assert.Contains(t, page, ".SH SYNOPSIS", "%s", m)
				help, err := exec.Command(filepath.Join(root, prog), "--help").Output()
				require.NoError(t, err, "%s --help", name)
				for _, v := range regexp.MustCompile(`(?m)^LIFELINE_[A-Z0-9_]+`).FindAllString(string(help), -1) {
					assert.Contains(t, page, "\n"+v+"\n", "%s documents %s", m, v)
				}
			}

			// Maintainer scripts: present, executable, and enabling/starting nothing.
			starts := regexp.MustCompile(`(systemctl(\s+--?\S+)*\s+(enable|start|restart|reenable|preset)\b|deb-systemd-(helper|invoke)(\s+--?\S+)*\s+(enable|start|restart|reenable)\b)`)
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				p := filepath.Join(ctl, s)
				fi, err := os.Stat(p)
				require.NoError(t, err, "%s missing", s)
				assert.Equal(t, os.FileMode(0o755), fi.Mode().Perm(), "%s mode", s)
				text, err := os.ReadFile(p)
				require.NoError(t, err)
				src, err := os.ReadFile(filepath.Join("packaging", tt.pkg, s))
				require.NoError(t, err)
				assert.Equal(t, string(src), string(text), "%s is the repository's", s)
				text = regexp.MustCompile(`(?m)^\s*(#|echo ).*$`).ReplaceAll(text, nil) // comments and advice may say what the admin runs
				assert.Empty(t, string(starts.Find(text)), "%s must not enable or start a service", s)
				if sc, err := exec.LookPath("shellcheck"); err == nil {
					out, err := exec.Command(sc, "-s", "sh", p).CombinedOutput()
					assert.NoError(t, err, "shellcheck %s:\n%s", s, out)
				}
			}
			postinst, err := os.ReadFile(filepath.Join(ctl, "postinst"))
			require.NoError(t, err)
			assert.Contains(t, string(postinst), "systemd-sysusers "+tt.pkg+".conf", "postinst creates the system user")
			commands := regexp.MustCompile(`(?m)^\s*(#|echo ).*$`).ReplaceAll(postinst, nil) // what it runs, not what it says
			if tt.pkg == "lifeline-agent" {
				assert.NotRegexp(t, `(systemctl|deb-systemd-invoke)(\s+--?\S+)*\s+(try-)?restart`, string(commands),
					"an upgrade must not restart the agent: the operator running it may be connected through it (it restarts itself when idle)")
			} else {
				assert.Contains(t, string(commands), "deb-systemd-invoke try-restart lifeline-bastion.service", "an upgrade restarts only a running service")
				// Outage mode's path unit: recorded, never enabled; undone on removal and purge.
				assert.Contains(t, string(commands), "deb-systemd-helper update-state lifeline-poweroff.path", "postinst records lifeline-poweroff.path")
				for s, cmd := range map[string]string{"prerm": "deb-systemd-helper disable lifeline-poweroff.path", "postrm": "deb-systemd-helper purge lifeline-poweroff.path"} {
					text, err := os.ReadFile(filepath.Join(ctl, s))
					require.NoError(t, err)
					assert.Contains(t, string(text), cmd, "%s undoes lifeline-poweroff.path", s)
				}
			}
		})
	}
}

// TestDebMd5sums: the md5sums control file lists every file of the package,
// with its right digest, and nothing else, so `dpkg --verify` sees every
// file (conffiles included; dpkg checks those against its own record).
func TestDebMd5sums(t *testing.T) {
	dist, arch := debs(t)
	for _, tt := range debPackages {
		t.Run(tt.pkg, func(t *testing.T) {
			t.Parallel()
			root, ctl := extract(t, debFile(dist, tt.pkg, arch))
			files := map[string]string{}
			require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				require.True(t, d.Type().IsRegular(), "%s is not a regular file", p)
				data, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				sum := md5.Sum(data)
				rel, _ := filepath.Rel(root, p)
				files[rel] = hex.EncodeToString(sum[:])
				return nil
			}))
			f, err := os.Open(filepath.Join(ctl, "md5sums"))
			require.NoError(t, err, "the package has no md5sums")
			defer f.Close()
			listed := map[string]string{}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				sum, path, ok := strings.Cut(sc.Text(), "  ")
				require.True(t, ok, "md5sums line %q", sc.Text())
				require.NotContains(t, listed, path, "md5sums lists %s twice", path)
				listed[path] = sum
			}
			require.NoError(t, sc.Err())
			assert.Equal(t, files, listed, "md5sums against the package's files")
		})
	}
}

// TestDebCopyright: each package's copyright file (DEP-5) names exactly the
// Go modules linked into its programs (`go version -m`), each under the
// licence its LICENSE file in the module cache shows, and the Go standard
// library; every licence named has its text.
func TestDebCopyright(t *testing.T) {
	dist, arch := debs(t)
	for _, tt := range debPackages {
		t.Run(tt.pkg, func(t *testing.T) {
			t.Parallel()
			root, _ := extract(t, debFile(dist, tt.pkg, arch))
			linked := map[string]string{} // module path -> module@version
			for _, p := range tt.programs() {
				out, err := exec.Command("go", "version", "-m", filepath.Join(root, p)).Output()
				require.NoError(t, err, "go version -m %s", p)
				for _, line := range strings.Split(string(out), "\n") {
					f := strings.Fields(line)
					if len(f) >= 3 && f[0] == "dep" {
						linked[f[1]] = f[1] + "@" + f[2]
					}
					if len(f) >= 4 && f[0] == "=>" {
						t.Errorf("%s: module replaced (%s): name the replacement in the copyright file and here", p, line)
					}
				}
			}
			require.NotEmpty(t, linked, "go version -m found no modules")

			paras := dep5(t, filepath.Join("packaging", tt.pkg, "copyright"))
			require.NotEmpty(t, paras)
			assert.Equal(t, "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/", paras[0]["Format"])
			named := map[string]string{} // module path -> licence
			texts := map[string]bool{}
			used := map[string]bool{}
			for _, p := range paras[1:] {
				files, isFiles := p["Files"]
				lic, _, _ := strings.Cut(p["License"], "\n")
				switch {
				case isFiles:
					used[lic] = true
					switch files {
					case "*":
						assert.Equal(t, "Apache-2.0", lic, "lifeline's own code")
					case "go/*":
						assert.Equal(t, "BSD-3-clause", lic, "the Go standard library")
					default:
						named[strings.TrimSuffix(files, "/*")] = lic
					}
				case strings.Contains(p["License"], "\n"):
					texts[lic] = true
				}
			}
			assert.Contains(t, used, "BSD-3-clause", "the Go standard library's stanza (Files: go/*)")
			for lic := range used {
				assert.True(t, texts[lic], "licence %s has no stand-alone License paragraph with its text", lic)
			}
			paths := func(m map[string]string) []string {
				var out []string
				for k := range m {
					out = append(out, k)
				}
				sort.Strings(out)
				return out
			}
			assert.Equal(t, paths(linked), paths(named), "the modules of the copyright file against those linked into %v", tt.programs())
			for mod, lic := range named {
				if at, ok := linked[mod]; ok {
					assert.Equal(t, moduleLicence(t, at), lic, "licence of %s", at)
				}
			}
		})
	}
}

// dep5 parses a machine-readable copyright file into its paragraphs, each a
// field -> value map (continuation lines joined with "\n").
func dep5(t *testing.T, path string) []map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var paras []map[string]string
	for _, block := range strings.Split(strings.TrimSpace(string(data)), "\n\n") {
		p := map[string]string{}
		last := ""
		for _, line := range strings.Split(block, "\n") {
			if strings.HasPrefix(line, " ") {
				require.NotEmpty(t, last, "%s: continuation line first: %q", path, line)
				p[last] += "\n" + strings.TrimSpace(line)
				continue
			}
			k, v, ok := strings.Cut(line, ":")
			require.True(t, ok, "%s: not a field: %q", path, line)
			p[k] = strings.TrimSpace(v)
			last = k
		}
		paras = append(paras, p)
	}
	return paras
}

// moduleLicence reads the licence of module@version from its LICENSE file
// in the module cache, as a DEP-5 short name.
func moduleLicence(t *testing.T, modAtVersion string) string {
	t.Helper()
	out, err := exec.Command("go", "mod", "download", "-json", modAtVersion).Output()
	require.NoError(t, err, "go mod download %s", modAtVersion)
	dir := regexp.MustCompile(`"Dir": "([^"]+)"`).FindSubmatch(out)
	require.NotNil(t, dir, "no Dir for %s:\n%s", modAtVersion, out)
	matches, _ := filepath.Glob(filepath.Join(string(dir[1]), "LICEN[CS]E*"))
	require.NotEmpty(t, matches, "%s has no LICENSE file", modAtVersion)
	text, err := os.ReadFile(matches[0])
	require.NoError(t, err)
	s := strings.Join(strings.Fields(string(text)), " ")
	switch {
	case strings.Contains(s, "Apache License") && strings.Contains(s, "Version 2.0"):
		return "Apache-2.0"
	case strings.Contains(s, "Permission is hereby granted, free of charge"):
		return "Expat"
	case strings.Contains(s, "Redistribution and use in source and binary forms") && strings.Contains(s, "Neither the name"):
		return "BSD-3-clause"
	case strings.Contains(s, "Redistribution and use in source and binary forms"):
		return "BSD-2-clause"
	}
	t.Fatalf("%s: licence not recognised in %s", modAtVersion, matches[0])
	return ""
}

// TestDebRefusesBadArguments: `make deb` stops before building, writing or
// deleting anything when given an architecture, a platform or a version it
// cannot package; and the Debian versions it makes of git versions.
func TestDebRefusesBadArguments(t *testing.T) {
	need(t, "make")
	t.Parallel()
	tests := []struct {
		name, version, platforms, says string
	}{
		{"unknown Debian architecture", "1.0", "amd64:x86_64", "DIST_PLATFORMS entry 'amd64:x86_64'"},
		{"unknown platform", "1.0", "riscv64:riscv64", "DIST_PLATFORMS entry 'riscv64:riscv64'"},
		{"another platform's architecture", "1.0", "amd64:amd64 amd64:arm64", "DIST_PLATFORMS entry 'amd64:arm64'"},
		{"no platform", "1.0", "", "DIST_PLATFORMS is empty"},
		{"empty version", "", "amd64:amd64", "VERSION '' is not a version"},
		{"version with a space", "1.0 beta", "amd64:amd64", "VERSION '1.0 beta' is not a version"},
		{"version with an underscore", "1.0_beta", "amd64:amd64", "VERSION '1.0_beta' is not a version"},
		{"version with a quote", "1'0", "amd64:amd64", "VERSION '1'0' is not a version"},
		{"version with a slash", "1.0/../x", "amd64:amd64", "VERSION '1.0/../x' is not a version"},
		{"version not starting with a digit or letter", ".1", "amd64:amd64", "VERSION '.1' is not a version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dist := t.TempDir()
			marker := filepath.Join(dist, "keep")
			require.NoError(t, os.WriteFile(marker, nil, 0o644))
			mk := exec.Command("make", "-s", "deb", "DIST="+dist, "VERSION="+tt.version, "DIST_PLATFORMS="+tt.platforms)
			mk.Dir = repoRoot(t)
			var stderr bytes.Buffer
			mk.Stderr = &stderr
			out, err := mk.Output()
			var ee *exec.ExitError
			require.ErrorAs(t, err, &ee, "make deb accepted it:\n%s%s", out, stderr.String())
			assert.Equal(t, 2, ee.ExitCode())
			assert.Contains(t, stderr.String(), tt.says)
			assert.Empty(t, string(out), "nothing is built")
			left, err := os.ReadDir(dist)
			require.NoError(t, err)
			require.Len(t, left, 1, "nothing is written or deleted on refusal")
			assert.Equal(t, "keep", left[0].Name())
		})
	}
	for version, want := range map[string]string{
		"v1.2.0":             "1.2.0",
		"1.2.0":              "1.2.0",
		"v1.2.0-3-gabc1234":  "1.2.0+3+gabc1234",
		"abc1234-dirty":      "0.0.0+abc1234+dirty",
		"0.0.0-test":         "0.0.0+test",
		"1.2.3+test":         "1.2.3+test",
		"cda20da":            "0.0.0+cda20da",
		"v2.0.0-1-g1a2b3c-x": "2.0.0+1+g1a2b3c+x",
	} {
		mk := exec.Command("make", "-s", "deb-version", "VERSION="+version)
		mk.Dir = repoRoot(t)
		out, err := mk.CombinedOutput()
		require.NoError(t, err, "make deb-version VERSION=%s:\n%s", version, out)
		assert.Equal(t, want+"\n", string(out), "the Debian version of VERSION=%s", version)
	}
}

// TestDebNeedsTheLinkcheckProgram: nfpm, with the agent's config, refuses to
// build the agent's package without lifeline-linkcheck next to
// lifeline-agent, and writes nothing.
func TestDebNeedsTheLinkcheckProgram(t *testing.T) {
	need(t, "go")
	t.Parallel()
	bin, gen, out := t.TempDir(), t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bin, "lifeline-agent"), []byte("#!/bin/sh\n"), 0o755))
	for _, f := range []string{"changelog.gz", "lifeline-agent.1.gz", "lifeline-linkcheck.8.gz"} {
		require.NoError(t, os.WriteFile(filepath.Join(gen, f), nil, 0o644))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "tool", "nfpm", "package", "--packager", "deb",
		"--config", "systemd/packaging/lifeline-agent.yaml", "--target", out+"/")
	cmd.Dir = repoRoot(t)
	cmd.Env = append(os.Environ(), "LIFELINE_DEB_VERSION=1.0", "LIFELINE_DEB_ARCH=amd64",
		"LIFELINE_DEB_BIN="+bin, "LIFELINE_DEB_GEN="+gen, "SOURCE_DATE_EPOCH=0")
	msg, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "nfpm built the agent's package without lifeline-linkcheck (%v):\n%s", err, msg)
	assert.Contains(t, string(msg), "lifeline-linkcheck")
	left, err := os.ReadDir(out)
	require.NoError(t, err)
	assert.Empty(t, left, "nothing is written")
}

// TestShellcheckPackaging runs shellcheck on the maintainer scripts and the
// packaging scripts as they are in the repository.
func TestShellcheckPackaging(t *testing.T) {
	sc := need(t, "shellcheck")
	t.Parallel()
	scripts, err := filepath.Glob("packaging/*/p*")
	require.NoError(t, err)
	require.Len(t, scripts, 6, "postinst, prerm, postrm for two packages")
	tools, err := filepath.Glob("packaging/*.sh")
	require.NoError(t, err)
	require.Len(t, tools, 2, "debchangelog.sh and manpages.sh")
	for _, s := range append(scripts, tools...) {
		t.Run(s, func(t *testing.T) {
			t.Parallel()
			out, err := exec.Command(sc, "-S", "style", s).CombinedOutput()
			assert.NoError(t, err, "shellcheck %s:\n%s", s, out)
		})
	}
}
