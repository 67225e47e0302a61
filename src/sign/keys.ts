import { sha256 } from '../util/digest.js';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Codes, IntegrityError, UsageError } from '../errors.js';
import { exists, writeFileAtomic } from '../util/fsx.js';

/** `sha256:` and the hex of the SPKI DER: what operators compare out of band. */
export function fingerprint(pub: KeyObject): string {
  return sha256(pub.export({ type: 'spki', format: 'der' }));
}

export async function readPassphrase(file: string | undefined): Promise<string | undefined> {
  if (!file) return undefined;
  try {
    const p = (await fs.readFile(file, 'utf8')).replace(/\r?\n$/, '');
    if (!p) throw new Error('it is empty');
    return p;
  } catch (e) {
    throw new UsageError(Codes.passphrase, `cannot read passphrase file ${file}: ${(e as Error).message}`, { hint: 'Put the passphrase alone on the first line of a file readable only by you.', cause: e });
  }
}

/** Writes ferry.key (PKCS#8 PEM, encrypted when a passphrase is given) and ferry.pub (SPKI PEM). */
export async function generateKey(outDir: string, passphrase?: string): Promise<{ key: string; pub: string; fingerprint: string }> {
  const key = path.join(outDir, 'ferry.key');
  const pub = path.join(outDir, 'ferry.pub');
  if ((await exists(key)) || (await exists(pub))) {
    throw new UsageError(Codes.keyExists, `${outDir} already holds ferry.key or ferry.pub`, {
      hint: 'Refusing to overwrite a signing key that sites may already trust. Choose another --out directory.',
    });
  }
  const pair = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const pem = pair.privateKey.export(
    passphrase ? { type: 'pkcs8', format: 'pem', cipher: 'aes-256-cbc', passphrase } : { type: 'pkcs8', format: 'pem' },
  ) as string;
  await fs.mkdir(outDir, { recursive: true });
  await writeFileAtomic(key, pem, 0o600);
  await writeFileAtomic(pub, pair.publicKey.export({ type: 'spki', format: 'pem' }) as string, 0o644);
  return { key, pub, fingerprint: fingerprint(pair.publicKey) };
}

export async function loadPrivateKey(file: string, passphrase?: string): Promise<KeyObject> {
  let pem: string;
  try {
    pem = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new UsageError(Codes.keyRead, `cannot read signing key ${file}: ${(e as Error).message}`, { hint: 'Create one with `ferry key generate --out DIR`.', cause: e });
  }
  try {
    const k = createPrivateKey({ key: pem, format: 'pem', passphrase });
    if (k.asymmetricKeyType !== 'ec' || k.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error('not an ECDSA P-256 key');
    return k;
  } catch (e) {
    const enc = pem.includes('ENCRYPTED');
    throw new UsageError(enc ? Codes.passphrase : Codes.keyRead, enc ? `cannot decrypt ${file}: wrong or missing passphrase` : `${file} is not an ECDSA P-256 private key: ${(e as Error).message}`, {
      hint: enc ? 'Pass --passphrase-file with the passphrase the key was generated with.' : 'Use a key made by `ferry key generate`.',
      cause: e,
    });
  }
}

export async function loadPublicKey(file: string): Promise<KeyObject> {
  let pem: string;
  try {
    pem = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new UsageError(Codes.keyRead, `cannot read trusted key ${file}: ${(e as Error).message}`, { hint: 'Pass the ferry.pub that came with the bundle through a trusted channel.', cause: e });
  }
  // createPublicKey derives a public key from a private one: accepting it would hide that the
  // signing key has been copied to the site.
  if (/-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----/.test(pem)) {
    throw new UsageError(Codes.keyNotPublic, `${file} is a private key; --trust takes the public key (ferry.pub)`, {
      hint: 'Pass ferry.pub, made beside ferry.key by `ferry key generate`. Keep ferry.key off the site: whoever holds it can sign bundles.',
    });
  }
  try {
    const k = createPublicKey(pem);
    if (k.asymmetricKeyType !== 'ec') throw new Error('not an EC key');
    return k;
  } catch (e) {
    throw new UsageError(Codes.keyRead, `cannot read trusted key ${file}: ${(e as Error).message}`, { hint: 'Pass the ferry.pub that came with the bundle through a trusted channel.', cause: e });
  }
}

/** Base64 of a DER ECDSA signature over SHA-256, which `openssl dgst -sha256 -verify` accepts. */
export function signBytes(key: KeyObject, data: Buffer): string {
  return sign('sha256', data, key).toString('base64');
}

/** `claimed`: the signer fingerprint the bundle names (unverified), shown when the trusted key does not match. */
export function verifyBytes(pub: KeyObject, data: Buffer, sigB64: string, what: string, claimed?: string): void {
  let ok = false;
  try {
    ok = verify('sha256', data, pub, Buffer.from(sigB64.trim(), 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) {
    const fp = fingerprint(pub);
    const says = claimed && claimed !== fp ? `; the bundle says it was signed by ${claimed}` : '';
    throw new IntegrityError(Codes.bundleSignature, `the signature of ${what} does not verify with the trusted key ${fp}${says}`, {
      hint: says
        ? `Compare ${claimed} with the fingerprint the bundle's maker gave you (ferry key generate printed it): if it matches, you passed the wrong --trust key; if not, the bundle was not signed by them. Do not use it until one of those holds.`
        : 'The bundle was altered or signed by another key. Do not use it; get a fresh copy and the right ferry.pub.',
    });
  }
}
