// Verify a keyless (certificate) Sigstore bundle over a file with npm's @sigstore/verify, offline, against a
// trusted_root.json: certificate chain, SCT, transparency log inclusion proof + checkpoint + SET, identity.
// usage: node verify-keyless-bundle.mjs MESSAGE BUNDLE TRUSTED_ROOT.json IDENTITY ISSUER
// Exit 0: verified. Exit 1: verification failed (reason on stderr). Exit 2: bad usage.
import { readFileSync } from 'node:fs';

import bundleLib from '@sigstore/bundle';
import specs from '@sigstore/protobuf-specs';
import verifyLib from '@sigstore/verify';

const [messagePath, bundlePath, rootPath, identity, issuer] = process.argv.slice(2);
if (!issuer) {
  console.error('usage: node verify-keyless-bundle.mjs MESSAGE BUNDLE TRUSTED_ROOT.json IDENTITY ISSUER');
  process.exit(2);
}

try {
  const message = readFileSync(messagePath);
  const bundle = bundleLib.bundleFromJSON(JSON.parse(readFileSync(bundlePath, 'utf8')));
  const root = specs.TrustedRoot.fromJSON(JSON.parse(readFileSync(rootPath, 'utf8')));
  // Default thresholds: one transparency log entry and one SCT are required.
  const verifier = new verifyLib.Verifier(verifyLib.toTrustMaterial(root));
  verifier.verify(verifyLib.toSignedEntity(bundle, message), {
    subjectAlternativeName: identity,
    extensions: { issuer },
  });
  console.log(`verified: ${bundlePath} over ${messagePath} for ${identity} (${issuer})`);
} catch (error) {
  console.error(`not verified: ${error.code ?? error.name}: ${error.message}`);
  process.exit(1);
}
