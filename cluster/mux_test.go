package cluster

import (
	"net"
	"testing"
)

func TestPeerHandshakeNeedsTheSameSecrets(t *testing.T) {
	good := peerKey("token", []byte("0123456789abcdef"))
	for name, clientKey := range map[string][]byte{
		"same secrets": good,
		"wrong token":  peerKey("other", []byte("0123456789abcdef")),
		"wrong gossip": peerKey("token", []byte("fedcba9876543210")),
		"no secrets":   peerKey("", nil),
	} {
		a, b := net.Pipe()
		errs := make(chan error, 1)
		go func() {
			_, err := serverHandshake(b, good)
			b.Close()
			errs <- err
		}()
		cerr := clientHandshake(a, clientKey, streamRaft)
		a.Close()
		serr := <-errs
		ok := cerr == nil && serr == nil
		if want := name == "same secrets"; ok != want {
			t.Errorf("%s: client %v, server %v", name, cerr, serr)
		}
	}
}

func TestHandshakeRefusesStrangers(t *testing.T) {
	a, b := net.Pipe()
	go func() {
		a.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n0123456789012345678"))
		a.Close()
	}()
	if _, err := serverHandshake(b, peerKey("t", nil)); err == nil {
		t.Fatal("an HTTP request passed the peer handshake")
	}
}
