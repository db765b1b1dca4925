package sdk

// Peer modules. A module that talks to another module by name reads that name from a setting (edged,
// noruntime, nodestatus and edgehub: `metaManager`; pluginmanager: `hub`) whose default is the
// constant here, so a host that runs the peer under another name changes one setting per module and
// no module hard-codes a peer.
const (
	// DefaultMetaManager is the edge module that stores objects on disk and carries changes to the
	// cloud: the default of every `metaManager` setting.
	DefaultMetaManager = "metamanager"
)

// HostVersioner is implemented by a host that reports its own release (the builtin host does: the
// edgecore or cloudcore binary's version). nodestatus reports it as the node's kedgeVersion; a module
// run by a host without it reports none.
type HostVersioner interface {
	HostVersion() string
}
