// ggcr-registry: go-containerregistry's pkg/registry (the in-memory registry `crane registry
// serve` runs) with the OCI 1.1 referrers API turned on, for the test bed. crane 0.22's
// `registry serve` does not turn it on, and pkg/registry's own referrers answer leaves out
// what the distribution spec asks of a registry that serves the API; the handler below adds
// it: the artifactType of a listed manifest is its own `artifactType` field when it has one
// (pkg/registry reports the config's media type only, so an `oras attach` artifact would be
// "application/vnd.oci.empty.v1+json"), `?artifactType=` filters with OCI-Filters-Applied, a
// repository with nothing in it answers an empty index (never 404: a 404 means "no API"), and
// a manifest PUT with a subject answers OCI-Subject, so clients skip the tag-schema fallback.
//
// usage: ggcr-registry -addr 127.0.0.1:PORT | -version
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime/debug"
	"strings"

	"github.com/google/go-containerregistry/pkg/registry"
)

const ggcr = "github.com/google/go-containerregistry"

type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

// What a manifest says about itself that the referrers list reports.
type manifestFields struct {
	ArtifactType string `json:"artifactType"`
	Config       struct {
		MediaType string `json:"mediaType"`
	} `json:"config"`
	Subject *struct {
		Digest string `json:"digest"`
	} `json:"subject"`
}

type server struct{ inner http.Handler }

// referrersPath splits /v2/<name>/referrers/<digest>; ok is false for any other path.
func referrersPath(p string) (repo, digest string, ok bool) {
	elems := strings.Split(strings.TrimPrefix(p, "/v2/"), "/")
	if !strings.HasPrefix(p, "/v2/") || len(elems) < 3 || elems[len(elems)-2] != "referrers" {
		return "", "", false
	}
	return strings.Join(elems[:len(elems)-2], "/"), elems[len(elems)-1], true
}

// call runs a request through pkg/registry and returns its recorded answer.
func (s *server) call(method, path string, header http.Header, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	s.inner.ServeHTTP(rec, req)
	return rec
}

func (s *server) referrers(w http.ResponseWriter, r *http.Request, repo string) {
	rec := s.call(http.MethodGet, r.URL.Path, nil, nil)
	list := index{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json", Manifests: []descriptor{}}
	switch rec.Code {
	case http.StatusOK:
		if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
			http.Error(w, "referrers: "+err.Error(), http.StatusInternalServerError)
			return
		}
	case http.StatusNotFound: // an unknown repository: nothing refers to anything there
	default:
		copyAnswer(w, rec)
		return
	}
	want := r.URL.Query().Get("artifactType")
	kept := []descriptor{}
	for _, d := range list.Manifests {
		m := s.call(http.MethodGet, "/v2/"+repo+"/manifests/"+d.Digest, nil, nil)
		var f manifestFields
		if m.Code == http.StatusOK && json.Unmarshal(m.Body.Bytes(), &f) == nil && f.ArtifactType != "" {
			d.ArtifactType = f.ArtifactType
		}
		if want == "" || d.ArtifactType == want {
			kept = append(kept, d)
		}
	}
	list.Manifests = kept
	out, _ := json.Marshal(list)
	w.Header().Set("Content-Type", list.MediaType)
	if want != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// putManifest stores the manifest and, when it has a subject, says so with OCI-Subject.
func (s *server) putManifest(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "manifest: "+err.Error(), http.StatusBadRequest)
		return
	}
	rec := s.call(r.Method, r.URL.RequestURI(), r.Header, body)
	var f manifestFields
	if rec.Code == http.StatusCreated && json.Unmarshal(body, &f) == nil && f.Subject != nil {
		w.Header().Set("OCI-Subject", f.Subject.Digest)
	}
	copyAnswer(w, rec)
}

func copyAnswer(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if repo, _, ok := referrersPath(r.URL.Path); ok && r.Method == http.MethodGet {
		s.referrers(w, r, repo)
		return
	}
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
		s.putManifest(w, r)
		return
	}
	s.inner.ServeHTTP(w, r)
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == ggcr {
				return m.Version
			}
		}
	}
	return "unknown"
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "loopback address to listen on (port 0: a free port, printed)")
	showVersion := flag.Bool("version", false, "print the go-containerregistry version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Printf("ggcr-registry (%s %s)\n", ggcr, version())
		return
	}
	host, _, err := net.SplitHostPort(*addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "ggcr-registry: -addr %q: want a loopback IP and a port (127.0.0.1:5000)\n", *addr)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "ggcr-registry: %v\n", err)
		os.Exit(1)
	}
	h := &server{inner: registry.New(registry.WithReferrersSupport(true),
		registry.Logger(log.New(io.Discard, "", 0)))}
	fmt.Printf("ggcr-registry listening on %s\n", ln.Addr())
	if err := http.Serve(ln, h); err != nil {
		fmt.Fprintf(os.Stderr, "ggcr-registry: %v\n", err)
		os.Exit(1)
	}
}
