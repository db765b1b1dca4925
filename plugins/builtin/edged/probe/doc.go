// Package probe runs a container's Kubernetes probes (liveness, readiness, startup) for Edged, with
// the kubelet's timing and threshold rules.
//
// Handlers: exec (through an Execer, which Edged implements over CRI ExecSync), httpGet (scheme,
// host defaulting to the pod IP, numeric or named port resolved from the container's ports, path,
// headers; 200-399 is success; redirects are followed to the same host only, a redirect elsewhere
// counts as success as in the kubelet), tcpSocket (a connection within the timeout) and grpc (the
// standard health service; SERVING is success).
//
// Timing, as the kubelet applies it: the first probe runs once initialDelaySeconds have passed since
// Start (call Start when the container has started), then every periodSeconds; each probe gets
// timeoutSeconds. A result is taken only after successThreshold consecutive successes or
// failureThreshold consecutive failures. While a startup probe has not succeeded, liveness and
// readiness probes do not run; once it succeeds it stops and the others run at once. After a
// liveness or startup failure the probe holds (no more probes) until Start is called again for the
// restarted container. An exec probe whose runtime call fails (not the command: the call) is
// discarded, not counted, so a runtime hiccup never kills a container. WithTimeUnit shortens the
// probe "second" for tests.
//
// Use by Edged:
//
//	mgr := probe.NewManager(execer, log)
//	err := mgr.Start(pod.UID, podIP, &container, containerID) // bad probe spec -> error, nothing runs
//	for r := range mgr.Results() { ... }  // state changes only (and the first result of each probe)
//	mgr.Ready(pod.UID, name); mgr.Started(pod.UID, name)
//	mgr.Stop(pod.UID, name); mgr.StopPod(pod.UID); mgr.Close()
//
// A liveness Result with Healthy=false means: restart the container (then Start again with the new
// container ID; Start replaces the previous probes of that container).
package probe
