package webpush

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// recordSize is the aes128gcm record size; the whole message is one record.
const recordSize = 4096

// headerLen is salt(16) + rs(4) + idlen(1) + keyid(65).
const headerLen = 16 + 4 + 1 + 65

// MaxPlaintext is the largest payload that fits one record.
const MaxPlaintext = recordSize - 16 - 1 - headerLen

// Encrypt encrypts plaintext for a subscription per RFC 8291 (Message
// Encryption for Web Push) with the aes128gcm content coding of RFC 8188.
// uaPublic is the subscription's p256dh key (uncompressed point), auth its
// 16-byte authentication secret.
func Encrypt(plaintext, uaPublic, auth []byte, random io.Reader) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("web push payload of %d bytes exceeds %d", len(plaintext), MaxPlaintext)
	}
	if len(auth) != 16 {
		return nil, errors.New("web push auth secret must be 16 bytes")
	}
	curve := ecdh.P256()
	ua, err := curve.NewPublicKey(uaPublic)
	if err != nil {
		return nil, fmt.Errorf("web push p256dh key: %w", err)
	}
	as, err := curve.GenerateKey(random)
	if err != nil {
		return nil, fmt.Errorf("generate ephemeral key: %w", err)
	}
	secret, err := as.ECDH(ua)
	if err != nil {
		return nil, fmt.Errorf("ecdh: %w", err)
	}
	salt := make([]byte, 16)
	if _, err := io.ReadFull(random, salt); err != nil {
		return nil, fmt.Errorf("read salt: %w", err)
	}
	asPublic := as.PublicKey().Bytes()
	cek, nonce, err := DeriveKeys(secret, auth, salt, uaPublic, asPublic)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	out := make([]byte, headerLen, headerLen+len(plaintext)+1+gcm.Overhead())
	copy(out, salt)
	binary.BigEndian.PutUint32(out[16:], recordSize)
	out[20] = byte(len(asPublic))
	copy(out[21:], asPublic)
	record := append(append(make([]byte, 0, len(plaintext)+1), plaintext...), 0x02) // last-record delimiter
	return gcm.Seal(out, nonce, record, nil), nil
}

// DeriveKeys computes the content encryption key and nonce from the ECDH
// secret (RFC 8291 section 3.4). Exported so receivers (tests) can decrypt.
func DeriveKeys(ecdhSecret, auth, salt, uaPublic, asPublic []byte) (cek, nonce []byte, err error) {
	info := append(append([]byte("WebPush: info\x00"), uaPublic...), asPublic...)
	ikm, err := hkdf.Key(sha256.New, ecdhSecret, auth, string(info), 32)
	if err != nil {
		return nil, nil, fmt.Errorf("hkdf ikm: %w", err)
	}
	prk, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		return nil, nil, fmt.Errorf("hkdf prk: %w", err)
	}
	if cek, err = hkdf.Expand(sha256.New, prk, "Content-Encoding: aes128gcm\x00", 16); err != nil {
		return nil, nil, fmt.Errorf("hkdf cek: %w", err)
	}
	if nonce, err = hkdf.Expand(sha256.New, prk, "Content-Encoding: nonce\x00", 12); err != nil {
		return nil, nil, fmt.Errorf("hkdf nonce: %w", err)
	}
	return cek, nonce, nil
}
