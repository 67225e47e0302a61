import { Command } from 'commander';
import { makeOutput } from './output.js';
import { examples, globals } from './shared.js';

export function specCommand(): Command {
  const spec = new Command('spec').description('work with bundle specs');
  spec.addCommand(
    new Command('validate')
      .description('check a spec and print its images')
      .argument('<spec>')
      .addHelpText('after', examples(['ferry spec validate bundle-spec/kubernetes.yaml']))
      .action(async (file: string, _o: unknown, c: Command) => {
        const out = makeOutput(globals(c));
        const { loadSpec } = await import('../spec/spec.js');
        const s = await loadSpec(file);
        out.result(`${file} is valid: ${s.images.length} images\n${s.images.map((i) => `  ${i.name}  [${i.platforms.map((p) => `${p.os}/${p.architecture}`).join(', ')}]`).join('\n')}`, {
          file,
          images: s.images.map((i) => ({ name: i.name, platforms: i.platforms })),
        });
      }),
  );
  spec.addCommand(
    new Command('schema')
      .description('print the JSON Schema of bundle specs')
      .addHelpText('after', examples(['ferry spec schema > bundle-spec/bundle-spec.schema.json']))
      .action(async () => {
        const { bundleSpecSchema } = await import('../spec/schema.js');
        process.stdout.write(`${JSON.stringify(bundleSpecSchema, null, 2)}\n`);
      }),
  );
  return spec;
}
