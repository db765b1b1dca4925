package volume

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
)

func setupHostPath(pod *corev1.Pod, v *corev1.Volume) (string, error) {
	hp := v.HostPath
	p := hp.Path
	if !filepath.IsAbs(p) {
		return "", podErr(pod, v.Name, "hostPath %q must be absolute", p)
	}
	p = filepath.Clean(p)
	typ := corev1.HostPathUnset
	if hp.Type != nil {
		typ = *hp.Type
	}
	fi, err := os.Stat(p)
	missing := errors.Is(err, fs.ErrNotExist)
	if err != nil && !missing {
		return "", podErr(pod, v.Name, "hostPath %q: %v", p, err)
	}
	want := func(ok bool, what string) (string, error) {
		if missing {
			return "", podErr(pod, v.Name, "hostPath %q (type %s) does not exist", p, typ)
		}
		if !ok {
			return "", podErr(pod, v.Name, "hostPath %q (type %s) is not a %s (it is %s)", p, typ, what, describe(fi.Mode()))
		}
		return p, nil
	}
	switch typ {
	case corev1.HostPathUnset:
		return p, nil
	case corev1.HostPathDirectoryOrCreate:
		if missing {
			if err := os.MkdirAll(p, 0o755); err != nil {
				return "", podErr(pod, v.Name, "hostPath %q: create directory: %v", p, err)
			}
			return p, nil
		}
		return want(fi.IsDir(), "directory")
	case corev1.HostPathDirectory:
		return want(!missing && fi.IsDir(), "directory")
	case corev1.HostPathFileOrCreate:
		if missing {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return "", podErr(pod, v.Name, "hostPath %q: create parent directory: %v", p, err)
			}
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil && !errors.Is(err, fs.ErrExist) {
				return "", podErr(pod, v.Name, "hostPath %q: create file: %v", p, err)
			}
			if f != nil {
				f.Close()
			}
			if fi, err = os.Stat(p); err != nil {
				return "", podErr(pod, v.Name, "hostPath %q: %v", p, err)
			}
			missing = false
		}
		return want(fi.Mode().IsRegular(), "file")
	case corev1.HostPathFile:
		return want(!missing && fi.Mode().IsRegular(), "file")
	case corev1.HostPathSocket:
		return want(!missing && fi.Mode()&fs.ModeSocket != 0, "socket")
	case corev1.HostPathCharDev:
		return want(!missing && fi.Mode()&fs.ModeCharDevice != 0, "character device")
	case corev1.HostPathBlockDev:
		return want(!missing && fi.Mode()&fs.ModeDevice != 0 && fi.Mode()&fs.ModeCharDevice == 0, "block device")
	default:
		return "", podErr(pod, v.Name, "hostPath type %q is not supported", typ)
	}
}

func describe(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	}
	return "something else"
}
