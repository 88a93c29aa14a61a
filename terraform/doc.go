// Package terraform holds no code: this directory is the Terraform module of
// the lifeline jump host. Its tests check the HCL offline (security properties,
// inputs, outputs, the secret-store paths and the role's exact resources), run
// the module's variable validations and templates through terraform itself in
// a provider-less root (cloud-init schema, shellcheck, systemd-analyze, user
// data byte-identical across membership changes), and run the rendered
// instance scripts with the AWS CLI against a local stand-in for the SSM API
// and a real lifeline-bastion.
package terraform
