package streambench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// BenchmarkExecRoundTrip: one `true` in an edge pod's container per op, as kubectl exec runs it over
// websocket (v5/v4.channel.k8s.io → kube-apiserver, which speaks SPDY to the kubelet API →
// cloudstream → tunnel → edgestream → CRI Exec in containerd), until the exit status is back.
// p50-ms/p99-ms are per op. (client-go's tools/remotecommand would need k8s.io/streaming, which is
// not in go.sum; the websocket stream protocol is small enough to speak here.)
func BenchmarkExecRoundTrip(b *testing.B) {
	s := newStack(b)
	s.run("sleeper", "sleep", "3600")
	u := s.env.Client.CoreV1().RESTClient().Post().Namespace(s.ns).Resource("pods").Name("sleeper").SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{Container: "main", Command: []string{"true"}, Stdout: true, Stderr: true}, scheme.ParameterCodec).URL()
	u.Scheme = "wss"
	conf, err := rest.TLSConfigFor(s.env.Config)
	if err != nil {
		b.Fatal(err)
	}
	d := websocket.Dialer{TLSClientConfig: conf, Subprotocols: []string{"v5.channel.k8s.io", "v4.channel.k8s.io"}, HandshakeTimeout: 30 * time.Second}
	hdr := http.Header{}
	if s.env.Config.BearerToken != "" {
		hdr.Set("Authorization", "Bearer "+s.env.Config.BearerToken)
	}
	exec := func() error {
		ws, resp, err := d.Dial(u.String(), hdr)
		if err != nil {
			if resp != nil {
				body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
				return fmt.Errorf("%w: %s %s", err, resp.Status, body)
			}
			return err
		}
		defer ws.Close()
		_ = ws.SetReadDeadline(time.Now().Add(time.Minute))
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return fmt.Errorf("stream ended before the exit status: %w", err)
			}
			if len(msg) > 0 && msg[0] == 3 { // the error channel: the command's status
				var st metav1.Status
				if err := json.Unmarshal(msg[1:], &st); err != nil {
					return fmt.Errorf("status %q: %w", msg[1:], err)
				}
				if st.Status != metav1.StatusSuccess {
					return fmt.Errorf("exec failed: %s", msg[1:])
				}
				return nil
			}
		}
	}
	if err := exec(); err != nil { // the path works before it is timed
		b.Fatalf("exec through the stream tunnel: %v", err)
	}
	var took []time.Duration
	for b.Loop() {
		start := time.Now()
		if err := exec(); err != nil {
			b.Fatalf("exec: %v", err)
		}
		took = append(took, time.Since(start))
	}
	b.ReportMetric(percentile(took, 0.50), "p50-ms")
	b.ReportMetric(percentile(took, 0.99), "p99-ms")
}

// logLines lines of 100 bytes: a 10 MB log written once, then read whole per op.
const logLines = 100000

// BenchmarkLogThroughput: a pod's whole container log (10 MB, written once before timing) read per op
// through the API server (GetLogs(...).Stream → cloudstream → tunnel → edgestream, which reads the
// CRI log file and strips its prefixes). MB/s is of the log text the client receives.
func BenchmarkLogThroughput(b *testing.B) {
	s := newStack(b)
	line := strings.Repeat("x", 99) // + "\n" = 100 bytes
	s.run("writer", "sh", "-c", "yes "+line+" | head -n "+strconv.Itoa(logLines)+"; echo log-complete; exec sleep 3600")
	one := int64(1)
	wait(b, "the log written", func() bool {
		_, last, err := s.logs("writer", &corev1.PodLogOptions{TailLines: &one})
		return err == nil && last == "log-complete\n"
	})
	size, _, err := s.logs("writer", &corev1.PodLogOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if want := int64(logLines*100 + len("log-complete\n")); size != want {
		b.Fatalf("the log is %d bytes, want %d", size, want)
	}
	b.SetBytes(size)
	for b.Loop() {
		n, _, err := s.logs("writer", &corev1.PodLogOptions{})
		if err != nil || n != size {
			b.Fatalf("read %d of %d bytes: %v", n, size, err)
		}
	}
}
