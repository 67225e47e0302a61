import { Command } from 'commander';
import { makeOutput } from './output.js';
import { examples, globals } from './shared.js';

export function keyCommand(): Command {
  const key = new Command('key').description('the bundle signing key');
  key.addCommand(
    new Command('generate')
      .description('make an ECDSA P-256 signing key pair: ferry.key (PKCS#8 PEM) and ferry.pub (SPKI PEM)')
      .requiredOption('--out <dir>', 'directory for ferry.key and ferry.pub')
      .option('--passphrase-file <file>', 'encrypt ferry.key with the passphrase in this file')
      .addHelpText('after', examples(['ferry key generate --out keys', 'ferry key generate --out keys --passphrase-file ~/.ferry-pass']))
      .action(async (o: { out: string; passphraseFile?: string }, c: Command) => {
        const out = makeOutput(globals(c));
        const { generateKey, readPassphrase } = await import('../sign/keys.js');
        const r = await generateKey(o.out, await readPassphrase(o.passphraseFile));
        out.result(`wrote ${r.key} (keep it secret${o.passphraseFile ? ', encrypted' : ''}) and ${r.pub}\nfingerprint ${r.fingerprint}`, r);
      }),
  );
  return key;
}
