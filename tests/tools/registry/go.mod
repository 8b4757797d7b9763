// ggcr-registry for the test bed (see tests/tools/README.md): go-containerregistry's
// pkg/registry with the OCI 1.1 referrers API, a program of ours (main.go).
// rename registry ggcr-registry
module myrmex.test/tools/registry

go 1.25.0

tool myrmex.test/tools/registry

require github.com/google/go-containerregistry v0.22.1
