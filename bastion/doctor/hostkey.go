package doctor

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"github.com/lifeline-dev/lifeline/shared/keyfile"
)

// HostKey checks LIFELINE_HOST_KEY as sshd -t would: it exists, only its
// owner (the service user) may read it, and it parses. It never creates
// one.
func (d *Doctor) HostKey() Check {
	path := d.Config.HostKey
	what := "host key " + path
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fail(what, "does not exist",
			"on a new jump host, `lifeline-bastion hostkey --host NAME` creates it (so does the first start) and prints the known_hosts line for operators and agents; "+
				"if sites already pin a key, restore that file instead (Terraform: the host_key SSM parameter): a new key locks every site out until each gets the new line")
	case err != nil:
		return fail(what, err.Error(), d.permissionFix(path))
	case !fi.Mode().IsRegular():
		return fail(what, "is not a regular file", "point LIFELINE_HOST_KEY at the key file")
	}
	if p := fi.Mode().Perm(); p&0o077 != 0 {
		return fail(what, fmt.Sprintf("has mode %04o: others may read the private key (the bastion refuses to start)", p), "chmod 600 "+path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && d.Owner >= 0 && int(st.Uid) != d.Owner {
		return fail(what, fmt.Sprintf("is owned by %s, not %s: the service cannot read a 0600 key it does not own", userName(int(st.Uid)), d.ownerName()),
			fmt.Sprintf("chown %s: %s", d.ownerName(), path))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fail(what, err.Error(), d.permissionFix(path))
	}
	signer, err := keyfile.Parse(path, data)
	if err != nil {
		return fail(what, err.Error(), "restore the key from a backup or the host_key SSM parameter (ssh-keygen -y -f "+path+
			" shows whether OpenSSH can read it); a new key locks every site out until each gets the new known_hosts line")
	}
	pub := signer.PublicKey()
	return pass("host key %s: %s %s, mode %04o", path, pub.Type(), keyfile.Fingerprint(pub), fi.Mode().Perm())
}
