package edgecontroller

import (
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func secs(v int64) *int64 { return &v }

// What tolerate and restore do to a pod's tolerations, case by case (the API-server path is in
// autonomy_test.go): raise shorter ones, never shorten, add missing ones, restore exactly.
func TestTolerateRaisesAddsNeverShortensAndRestorePutsBack(t *testing.T) {
	unreach := func(s *int64) corev1.Toleration {
		return corev1.Toleration{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: s}
	}
	notReady := func(s *int64) corev1.Toleration {
		return corev1.Toleration{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: s}
	}
	show := func(ts []corev1.Toleration) map[string]string {
		out := map[string]string{}
		for _, t := range ts {
			v := "forever"
			if t.TolerationSeconds != nil {
				v = strconv.FormatInt(*t.TolerationSeconds, 10)
			}
			out[t.Key+"/"+string(t.Effect)] = v
		}
		return out
	}
	tests := []struct {
		name      string
		in        []corev1.Toleration
		want      *int64
		changed   bool
		tolerated map[string]string
		restored  map[string]string
	}{
		{"defaults raised to forever", []corev1.Toleration{unreach(secs(300)), notReady(secs(300))}, nil, true,
			map[string]string{"node.kubernetes.io/unreachable/NoExecute": "forever", "node.kubernetes.io/not-ready/NoExecute": "forever"},
			map[string]string{"node.kubernetes.io/unreachable/NoExecute": "300", "node.kubernetes.io/not-ready/NoExecute": "300"}},
		{"missing ones added, restored to 0", nil, nil, true,
			map[string]string{"node.kubernetes.io/unreachable/NoExecute": "forever", "node.kubernetes.io/not-ready/NoExecute": "forever"},
			map[string]string{"node.kubernetes.io/unreachable/NoExecute": "0", "node.kubernetes.io/not-ready/NoExecute": "0"}},
		{"a bound only raises", []corev1.Toleration{unreach(secs(300)), notReady(secs(900))}, secs(600), true,
			map[string]string{"node.kubernetes.io/unreachable/NoExecute": "600", "node.kubernetes.io/not-ready/NoExecute": "900"},
			map[string]string{"node.kubernetes.io/unreachable/NoExecute": "300", "node.kubernetes.io/not-ready/NoExecute": "900"}},
		{"unlimited already", []corev1.Toleration{unreach(nil), notReady(nil)}, nil, false, nil, nil},
		{"tolerates everything", []corev1.Toleration{{Operator: corev1.TolerationOpExists}}, nil, false, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{Tolerations: tt.in}}
			out, _, changed := tolerate(pod, tt.want)
			if changed != tt.changed {
				t.Fatalf("changed = %v, want %v", changed, tt.changed)
			}
			if !changed {
				return
			}
			if got := show(out.Spec.Tolerations); !equal(got, tt.tolerated) {
				t.Fatalf("tolerated: %v, want %v", got, tt.tolerated)
			}
			if _, _, again := tolerate(out, tt.want); again {
				t.Fatal("a second tolerate changes the pod again")
			}
			back, err := restore(out)
			if err != nil || back == nil {
				t.Fatalf("restore: %v %v", back, err)
			}
			if got := show(back.Spec.Tolerations); !equal(got, tt.restored) {
				t.Fatalf("restored: %v, want %v", got, tt.restored)
			}
			if _, ok := back.Annotations[AutonomyPodAnnotation]; ok {
				t.Fatal("record kept after restore")
			}
		})
	}
}

func equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
