// Independent oracle for dashpay's address derivation: @dashevo/dashcore-lib.
//
// stdin:  {"key": "<xpub|tpub|drkv|DRKV...>", "network": "mainnet"|"testnet",
//          "chain": <int> | null, "start": <int>, "count": <int>}
// stdout: JSON array of the P2PKH addresses at <key>/<chain>/<start..start+count-1>
//         (at <key>/<i> when chain is null: the legacy Dash Core layout).
// A JSON array of such requests gives an array of answers (one node start for many
// checks: starting node and loading dashcore-lib costs about half a second).
// Errors go to stderr with exit status 1.
//
// dashcore-lib knows only the xpub/tpub version bytes, so every key is re-versioned
// to the configured network's extended-public-key bytes before parsing (the same
// "the network decides, not the prefix" rule dashpay follows).
'use strict';

const dashcore = require('@dashevo/dashcore-lib');

const { Address, HDPublicKey, Networks } = dashcore;
const { Base58Check } = dashcore.encoding;

const NETWORK_NAMES = { mainnet: 'livenet', testnet: 'testnet' };

function deriveAddresses(request) {
  const networkName = NETWORK_NAMES[request.network];
  if (!networkName) {
    throw new Error(`network must be mainnet or testnet, got ${request.network}`);
  }
  const network = Networks.get(networkName);
  const raw = Buffer.from(Base58Check.decode(String(request.key).trim()));
  if (raw.length !== 78) {
    throw new Error(`extended key decodes to ${raw.length} bytes, expected 78`);
  }
  const version = Buffer.alloc(4);
  version.writeUInt32BE(network.xpubkey);
  const rekeyed = Base58Check.encode(Buffer.concat([version, raw.subarray(4)]));

  let base = new HDPublicKey(rekeyed);
  if (request.chain !== null && request.chain !== undefined) {
    base = base.derive(request.chain);
  }
  const addresses = [];
  for (let i = request.start; i < request.start + request.count; i += 1) {
    const child = base.derive(i);
    addresses.push(new Address(child.publicKey, network).toString());
  }
  return addresses;
}

function main() {
  const chunks = [];
  process.stdin.on('data', (chunk) => chunks.push(chunk));
  process.stdin.on('end', () => {
    try {
      const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const answer = Array.isArray(request)
        ? request.map(deriveAddresses)
        : deriveAddresses(request);
      process.stdout.write(`${JSON.stringify(answer)}\n`);
    } catch (err) {
      process.stderr.write(`derive.js: ${err && err.stack ? err.stack : err}\n`);
      process.exitCode = 1;
    }
  });
}

main();
