// Package version holds the build's version, stamped by the Makefile with
// -ldflags "-X github.com/lifeline-dev/lifeline/shared/version.Version=…".
package version

// Version of this build; "dev" when built without the Makefile.
var Version = "dev"
