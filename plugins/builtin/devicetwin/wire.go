package devicetwin

// What goes out on MQTT in KubeEdge's shapes (compared with KubeEdge's devicetwin, see the README's
// "Payloads compared with KubeEdge"): twins on the wire carry no expected_version/actual_version
// (KubeEdge keeps them for its cloud sync only); a twin/update result carries, per property, the
// sides the request set, the type and optional.

// noVersions is t without its versions (a copy; nil stays nil).
func noVersions(t *msgTwin) *msgTwin {
	if t == nil {
		return nil
	}
	c := *t
	c.ExpectedVersion, c.ActualVersion = nil, nil
	return &c
}

// noVersionsMap is noVersions of each twin (nil for an empty map).
func noVersionsMap(twins map[string]*msgTwin) map[string]*msgTwin {
	if len(twins) == 0 {
		return nil
	}
	out := make(map[string]*msgTwin, len(twins))
	for p, t := range twins {
		out[p] = noVersions(t)
	}
	return out
}

// updateResultTwin is a property's entry in the twin/update result: the sides the request set.
func updateResultTwin(cur *msgTwin, expected, actual bool) *msgTwin {
	r := &msgTwin{Optional: cur.Optional, Metadata: cur.Metadata}
	if expected {
		r.Expected = cur.Expected
	}
	if actual {
		r.Actual = cur.Actual
	}
	return r
}
