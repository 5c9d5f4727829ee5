// Verify a key-based Sigstore bundle over a file with npm's @sigstore/verify, as an auditor would.
// usage: node verify-key-bundle.mjs MESSAGE BUNDLE PUBLIC_KEY.pem KEYID
// Exit 0: verified. Exit 1: verification failed (reason on stderr). Exit 2: bad usage.
import crypto from 'node:crypto';
import { readFileSync } from 'node:fs';

import bundleLib from '@sigstore/bundle';
import specs from '@sigstore/protobuf-specs';
import verifyLib from '@sigstore/verify';

const [messagePath, bundlePath, keyPath, keyid] = process.argv.slice(2);
if (!keyid) {
  console.error('usage: node verify-key-bundle.mjs MESSAGE BUNDLE PUBLIC_KEY.pem KEYID');
  process.exit(2);
}

try {
  const message = readFileSync(messagePath);
  const bundle = bundleLib.bundleFromJSON(JSON.parse(readFileSync(bundlePath, 'utf8')));
  const publicKey = crypto.createPublicKey(readFileSync(keyPath));
  // No Fulcio, Rekor, CT log or TSA: the only trust is the pinned key, found by the bundle's hint.
  const emptyRoot = specs.TrustedRoot.fromJSON({
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [],
    certificateAuthorities: [],
    ctlogs: [],
    timestampAuthorities: [],
  });
  const keyFinder = (hint) => {
    if (hint !== keyid) {
      throw new verifyLib.VerificationError({ code: 'PUBLIC_KEY_ERROR', message: `no pinned key for hint ${hint}` });
    }
    return { publicKey, validFor: () => true };
  };
  const verifier = new verifyLib.Verifier(verifyLib.toTrustMaterial(emptyRoot, keyFinder), {
    tlogThreshold: 0,
    ctlogThreshold: 0,
    tsaThreshold: 0,
  });
  verifier.verify(verifyLib.toSignedEntity(bundle, message));
  console.log(`verified: ${bundlePath} over ${messagePath} with key ${keyid}`);
} catch (error) {
  console.error(`not verified: ${error.code ?? error.name}: ${error.message}`);
  process.exit(1);
}
