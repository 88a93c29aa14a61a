// Package terraform holds no code: this directory is the Terraform module of
// the lifeline jump host. Its tests check the HCL offline (security properties,
// inputs, outputs), run the module's variable validations and templates through
// terraform itself in a provider-less root, and shellcheck the rendered
// bootstrap script.
package terraform
