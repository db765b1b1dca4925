package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-io/kedge/host/hub"
	"github.com/kedge-io/kedge/host/message"
	"github.com/kedge-io/kedge/host/pki"
	"github.com/kedge-io/kedge/test/k8senv"
)

// What a KubeEdge edge gets from the cloud when it does not answer an object: observed from KubeEdge
// v1.23.1's own cloudcore and required of Kedge's the same way. A test edge speaks KubeEdge's JSON
// lane (as edgecore does, keepalives included) but answers nothing at first: the cloud sends a pod
// bound to it, then the same message (same ID) again; once the edge answers with KubeEdge's response
// (parent_msg_id = the message's ID, "OK"), the cloud stops sending it. Upstream resends every 5 s;
// Kedge's cloudhub runs here with ackTimeout 5s to match.
func TestKubeEdgeEdgeGetsAnUnansweredPodAgainUntilItAnswersFromUpstreamAndKedgeCloudcoreAlike(t *testing.T) {
	needBinaries(t)
	keDir := kubeedgeDir(t, "cloudcore")
	for _, cloudKind := range []string{"upstream cloudcore v1.23.1", "Kedge cloudcore"} {
		t.Run(cloudKind, func(t *testing.T) {
			env, err := k8senv.Start()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = env.Stop() })
			kcfg, err := clientcmd.BuildConfigFromFlags("", env.Kubeconfig)
			if err != nil {
				t.Fatal(err)
			}
			kc := kubernetes.NewForConfigOrDie(kcfg)
			ctx := context.Background()
			node := fmt.Sprintf("ack-%d-%c", os.Getpid()%100000, 'a'+len(cloudKind)%26)
			var hubPort, certPort int
			var token string
			if strings.HasPrefix(cloudKind, "upstream") {
				hp, cp, log := upstreamCloudcore(t, keDir, env)
				hubPort, certPort, token = hp, cp, upstreamToken(t, kc)
				t.Cleanup(func() {
					if t.Failed() {
						t.Logf("upstream cloudcore's lines about the node:\n%s", grepLines(log.String(), node, 30))
					}
				})
				// Upstream cloudcore sends pods only to Nodes labelled as edge nodes; edged would
				// register it, the test edge has none.
				if _, err := kc.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node,
					Labels: map[string]string{"node-role.kubernetes.io/edge": ""}}}, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
			} else {
				pkiDir := filepath.Join(t.TempDir(), "pki")
				hubPort, certPort = freePort(t), freePort(t)
				cloud := start(t, "cloudcore", []string{
					"KEDGE_MODULES__CLOUDHUB__ADDRESS=127.0.0.1:" + strconv.Itoa(hubPort),
					"KEDGE_MODULES__CLOUDHUB__CERTSERVERADDRESS=127.0.0.1:" + strconv.Itoa(certPort),
					"KEDGE_MODULES__CLOUDHUB__PKIDIR=" + pkiDir,
					"KEDGE_MODULES__CLOUDHUB__ACKTIMEOUT=5s",
					"KEDGE_MODULES__EDGECONTROLLER__ENABLE=true",
					"KEDGE_MODULES__EDGECONTROLLER__KUBECONFIG=" + env.Kubeconfig,
				})
				cloud.waitReady()
				code, tok, stderr := run(t, "cloudcore", nil, "token", "create", "--pki-dir", pkiDir)
				if code != 0 {
					t.Fatalf("token create: %d %s", code, stderr)
				}
				token = strings.TrimSpace(tok)
			}
			var joined *pki.JoinResult
			waitFor(t, "join with the cloud's token", time.Minute, func() (bool, string) {
				joined, err = pki.Join(ctx, pki.JoinOptions{CertServer: "127.0.0.1:" + strconv.Itoa(certPort), Token: token, NodeName: node, Dir: t.TempDir()})
				return err == nil, fmt.Sprint(err)
			})
			pair, err := tls.LoadX509KeyPair(joined.CertFile, joined.KeyFile)
			if err != nil {
				t.Fatal(err)
			}
			caPEM, err := os.ReadFile(joined.CAFile)
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(caPEM)
			conn, err := hub.Dial(ctx, hub.DialOptions{URL: "wss://127.0.0.1:" + strconv.Itoa(hubPort), NodeID: node, KubeEdgeLane: true,
				TLS: &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots, MinVersion: tls.VersionTLS12}, Options: hub.Options{Heartbeat: 5 * time.Second}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })
			go func() { // KubeEdge's keepalive, which upstream cloudhub needs to keep the session
				for {
					ka, _ := message.New("websocket", "resource", message.OpKeepalive, "node").WithContent("ping")
					if conn.Send(ctx, ka) != nil {
						return
					}
					select {
					case <-conn.Done():
						return
					case <-time.After(5 * time.Second):
					}
				}
			}()
			ns := "ack"
			if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			no := false
			if _, err := kc.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{NodeName: node,
				AutomountServiceAccountToken: &no, Containers: []corev1.Container{{Name: "c", Image: "localhost/busybox:local"}}}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			// Everything that is the pod, by message ID, with when it came.
			podMsgs := func(within time.Duration) []message.Message {
				var out []message.Message
				c, cancel := context.WithTimeout(ctx, within)
				defer cancel()
				for {
					m, err := conn.Receive(c)
					if err != nil {
						return out
					}
					if strings.HasSuffix(m.Route.Resource, ns+"/pod/p") && m.Route.Operation != message.OpResponse {
						out = append(out, m)
						if len(out) == 2 {
							return out
						}
					}
				}
			}
			got := podMsgs(3 * time.Minute)
			if len(got) < 2 {
				t.Fatalf("received the pod %d times while not answering, want it again", len(got))
			}
			if got[0].Header.ID != got[1].Header.ID || got[0].Header.ResourceVersion == "" {
				t.Fatalf("the pod came as %s then %s: want the same message (ID, resourceVersion %q) again", got[0].String(), got[1].String(), got[0].Header.ResourceVersion)
			}
			answer, err := got[1].Reply("metaManager", "OK")
			if err != nil {
				t.Fatal(err)
			}
			answer.Header.Sync, answer.Header.ResourceVersion, answer.Route.Group = false, "", "resource"
			if err := conn.Send(ctx, answer); err != nil {
				t.Fatal(err)
			}
			// Answered: not sent again within three resend intervals.
			c, cancel := context.WithTimeout(ctx, 16*time.Second)
			defer cancel()
			for {
				m, err := conn.Receive(c)
				if err != nil {
					break
				}
				if m.Header.ID == got[0].Header.ID {
					t.Fatalf("the pod was sent again after the edge answered it: %s", m.String())
				}
			}
		})
	}
}
