import { Command } from 'commander';
import { makeOutput } from './output.js';
import { examples, globals } from './shared.js';

export function answersCommand(): Command {
  const answers = new Command('answers').description('work with answers files (what ferry install asks about the site)');
  answers.addCommand(
    new Command('validate')
      .description('check an answers file: its schema, the rules across fields, join hosts resolved')
      .argument('<file>')
      .addHelpText('after', examples(['ferry answers validate answers.yaml']))
      .action(async (file: string, _o: unknown, c: Command) => {
        const out = makeOutput(globals(c));
        const { loadAnswers } = await import('../install/answers.js');
        const a = await loadAnswers(file);
        out.result(`${file} is valid: ${a.node.name} (${a.node.ip}) in ${a.domain}, ${a.join?.length ?? 0} nodes to join`, { file, answers: a });
      }),
  );
  answers.addCommand(
    new Command('schema')
      .description('print the JSON Schema of answers files')
      .addHelpText('after', examples(['ferry answers schema > install-answers.schema.json   # for an editor: # yaml-language-server: $schema=install-answers.schema.json']))
      .action(async () => {
        const { answersSchema } = await import('../spec/answers.js');
        process.stdout.write(`${JSON.stringify(answersSchema, null, 2)}\n`);
      }),
  );
  return answers;
}
