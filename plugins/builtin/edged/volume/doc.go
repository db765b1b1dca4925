// Package volume prepares a pod's volumes on the edge host for Edged.
//
// Every volume of a pod lives under <rootDir>/pods/<pod uid>/volumes/<volume name>, except
// hostPath volumes, which are the host path itself. Supported sources:
//
//   - emptyDir: a directory; medium Memory mounts a tmpfs there (sized by sizeLimit when set), or
//     fails with a clear error when the process may not mount. sizeLimit is recorded and reported by
//     Usage so Edged can evict a pod that exceeds it.
//   - hostPath: the host path, checked against its type ("", Directory, DirectoryOrCreate, File,
//     FileOrCreate, Socket, CharDevice, BlockDevice).
//   - configMap, secret, downwardAPI, projected (configMap, secret, downwardAPI, serviceAccountToken):
//     files written atomically the way the kubelet does it: the payload goes into a new hidden
//     directory "..<timestamp>", then the symlink "..data" is renamed over to point at it, and every
//     top-level file is a symlink "<name>" -> "..data/<name>". A reader never sees half an update and
//     a path opened by name before an update reads the new content after it.
//
// Objects come from a Source (Edged implements it over metamanager queries). The Source returns an
// object's JSON; configmap and secret are corev1 objects; serviceaccounttoken is the object the
// cloud's edgecontroller issues per pod (name = the pod's name): {"podUID", "tokens": [{"audience",
// "expirationSeconds", "token", "expirationTimestamp"}]}, tokens bound to that pod. A Source reports a missing object with an error for which IsNotFound is true (wrap
// ErrNotFound or return a Kubernetes NotFound status error); only then does "optional" apply.
//
// Typical use by Edged:
//
//	m := volume.NewManager(rootDir, src, volume.WithLogger(log))
//	paths, err := m.Setup(ctx, pod)            // idempotent; volume name -> host path
//	mounts, err := m.Mounts(pod, &c, paths)    // VolumeMounts -> CRI mounts for one container
//	err = m.Refresh(ctx, pod)                  // on a ConfigMap/Secret/token change; cheap if unchanged
//	err = m.Cleanup(pod.UID)                   // pod gone: unmount tmpfs, remove the pod dir
//
// Every error about a pod's input is an *Error naming the pod, the volume and what was wrong.
// Nothing is written outside the pod's directory except what a hostPath volume asks for
// (DirectoryOrCreate, FileOrCreate, a subPath inside a hostPath).
package volume
