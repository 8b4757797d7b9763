// kubelet-stub: the exec endpoint of a kubelet, served by the kubelet's own streaming code
// (k8s.io/kubelet/pkg/cri/streaming/remotecommand, what the kubelet and CRI runtimes serve
// exec with), for a node of a spec's own on the test bed. The command runs on this machine, as
// kwok's "local" exec runs it, but its exit comes back as a CRI runtime reports it (a
// k8s.io/utils/exec ExitError), so the error channel carries the kubelet's NonZeroExitCode
// Status with the ExitCode cause, where kwok's exec gives an InternalError (kwok wraps
// os/exec's error, which the streaming code does not recognise). stdin ends when the client
// closes it, as with a kubelet.
//
// usage: kubelet-stub -addr 127.0.0.1:PORT -cert FILE -key FILE (prints "READY <port>"), or
// kubelet-stub -version (the k8s.io/kubelet it was built with)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"runtime/debug"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	streaming "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

type local struct{}

// ExecInContainer runs cmd here and returns its exit as a CRI runtime does.
func (local) ExecInContainer(ctx context.Context, _ string, _ types.UID, _ string, cmd []string,
	in io.Reader, out, errOut io.WriteCloser, _ bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	c := osexec.CommandContext(ctx, cmd[0], cmd[1:]...)
	c.Stdout, c.Stderr = out, errOut
	if in != nil {
		// A pipe fed apart, closed at the end of the client's stdin: Wait must return when the
		// process exits, as a runtime's exec does, not when stdin ends (v4 never ends it).
		w, err := c.StdinPipe()
		if err != nil {
			return err
		}
		go func() {
			_, _ = io.Copy(w, in)
			_ = w.Close()
		}()
	}
	err := c.Run()
	var exit *osexec.ExitError
	if errors.As(err, &exit) {
		return utilexec.CodeExitError{Err: fmt.Errorf("error executing command %v, exit code %d", cmd, exit.ExitCode()),
			Code: exit.ExitCode()}
	}
	return err
}

// exec serves /exec/{namespace}/{pod}/{container}?command=...&stdin=...&stdout=..., as the
// kubelet's server does (pkg/kubelet/server/server.go getExec), with its protocols: the API
// server speaks SPDY to a kubelet (v4 and older) whatever its client spoke.
func exec(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/exec/"), "/")
	if len(parts) < 3 {
		http.Error(w, "want /exec/NAMESPACE/POD/CONTAINER", http.StatusNotFound)
		return
	}
	opts, err := streaming.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	streaming.ServeExec(w, r, local{}, parts[1]+"/"+parts[0], "", parts[2], r.URL.Query()["command"], opts,
		4*time.Hour, 30*time.Second, remotecommandconsts.SupportedStreamingProtocols)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	cert := flag.String("cert", "", "TLS certificate (PEM)")
	key := flag.String("key", "", "TLS key (PEM)")
	version := flag.Bool("version", false, "print the k8s.io/kubelet version and exit")
	flag.Parse()
	if *version {
		info, _ := debug.ReadBuildInfo()
		for _, m := range info.Deps {
			if m.Path == "k8s.io/kubelet" {
				fmt.Println("kubelet-stub k8s.io/kubelet", m.Version)
			}
		}
		return
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stdout, "READY %d\n", l.Addr().(*net.TCPAddr).Port)
	mux := http.NewServeMux()
	mux.HandleFunc("/exec/", exec)
	log.Fatal(http.ServeTLS(l, mux, *cert, *key))
}
