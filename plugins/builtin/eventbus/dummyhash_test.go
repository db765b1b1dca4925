package eventbus

import (
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// The unknown-user hash is a real bcrypt hash at the default cost (so a refusal of an unknown user
// costs what a wrong password does), of a password no user has.
func TestUnknownUserHashIsABcryptHashAtTheDefaultCost(t *testing.T) {
	cost, err := bcrypt.Cost(dummyHash)
	if err != nil || cost != bcrypt.DefaultCost {
		t.Fatalf("dummyHash cost = %d, %v; want %d", cost, err, bcrypt.DefaultCost)
	}
	if err := bcrypt.CompareHashAndPassword(dummyHash, []byte("kedge-no-such-user")); err != nil {
		t.Fatalf("dummyHash is not the hash of its documented password: %v", err)
	}
}
