package edged

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	criv1 "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// pullPolicy is the container's policy, defaulted the way the API server does: Always for an image
// without a tag or tagged latest, else IfNotPresent.
func pullPolicy(c *corev1.Container) corev1.PullPolicy {
	if c.ImagePullPolicy != "" {
		return c.ImagePullPolicy
	}
	ref := c.Image
	if i := strings.Index(ref, "@"); i >= 0 {
		return corev1.PullIfNotPresent
	}
	slash := strings.LastIndex(ref, "/")
	colon := strings.LastIndex(ref, ":")
	if colon <= slash || strings.HasSuffix(ref, ":latest") {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

// ensureImage makes the container's image available: ImageStatus first, a pull only when the policy
// asks for one. A problem gives the container's waiting state and when to try again.
func (w *worker) ensureImage(ctx context.Context, c *corev1.Container) (ref string, wait *waitState, retry time.Time) {
	policy := pullPolicy(c)
	st, err := w.m.cri.img.ImageStatus(ctx, &criv1.ImageStatusRequest{Image: &criv1.ImageSpec{Image: c.Image}})
	if err != nil {
		return "", &waitState{"ErrImageInspect", fmt.Sprintf("cannot inspect image %q: %v", c.Image, w.m.criErr("ImageStatus", err))},
			time.Now().Add(w.m.Backoff.Base)
	}
	present := st.Image != nil
	switch policy {
	case corev1.PullNever:
		if present {
			return c.Image, nil, time.Time{}
		}
		w.log.Warn("image not present and the pull policy is Never", "container", c.Name, "image", c.Image)
		return "", &waitState{"ErrImageNeverPull", fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)},
			time.Now().Add(w.m.Backoff.Base)
	case corev1.PullIfNotPresent:
		if present {
			return c.Image, nil, time.Time{}
		}
	}
	b := w.pulls[c.Image]
	if b != nil && time.Now().Before(b.until) {
		return "", &waitState{"ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q: %s", c.Image, b.lastErr)}, b.until
	}
	pctx, cancel := context.WithTimeout(ctx, w.m.Images.PullTimeout)
	defer cancel()
	w.log.Info("pulling image", "container", c.Name, "image", c.Image, "policy", policy)
	resp, err := w.m.cri.img.PullImage(pctx, &criv1.PullImageRequest{Image: &criv1.ImageSpec{Image: c.Image}})
	if err == nil {
		delete(w.pulls, c.Image)
		return resp.ImageRef, nil, time.Time{}
	}
	if present && w.m.Images.LocalOnPullFailure {
		w.log.Warn("pull failed; using the image present on the node (images.localOnPullFailure)", "image", c.Image, "err", err)
		return c.Image, nil, time.Time{}
	}
	d := w.m.Backoff.Base
	if b != nil {
		d = min(b.delay*2, w.m.Backoff.Max)
	}
	msg := fmt.Sprintf("failed to pull image %q: %v (the image is not on this node; import it, or make a registry reachable)", c.Image, err)
	w.pulls[c.Image] = &backoff{delay: d, until: time.Now().Add(d), lastErr: msg}
	w.log.Warn("image pull failed", "container", c.Name, "image", c.Image, "err", err, "backoff", d)
	return "", &waitState{"ErrImagePull", msg}, time.Now().Add(d)
}
