import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { x as untar } from 'tar';
import { copyEntry, verifyBundle, type EntryPlace, type VerifyResult } from '../bundle/verify.js';
import { bundleId, parseChecksums, refuse, type BundleManifest } from '../bundle/format.js';
import { imagesInManifests, imagesInObjects, imagesMissingError, missingImages, type ImageNeed } from '../bundle/image-check.js';
import { UNPACKED_MARKER } from '../bundle/unpack.js';
import { Codes, FerryError, HostError, SpecError, UsageError } from '../errors.js';
import { MediaType, parseManifest } from '../oci/media.js';
import { kubeadmImages } from '../spec/kubernetes.js';
import { sha256Hex } from '../util/digest.js';
import { bootstrapValues, clusterNodes, kubernetesVersionOf } from './cluster.js';
import { firstServerSteps, preflightCheck, type InstallContext } from './first-server.js';
import { archOf, unitBinariesMissing } from './node-steps.js';
import type { PlanEntry } from './plan.js';
import { cgroupsOnce } from './cgroups.js';
import { RecordingHost, type BundleEntries, type Recorded, type RecordedFile } from './recording-host.js';
import { BOOTSTRAP_CHART, bundledBootstrapChart, renderBootstrap, type KubernetesObject } from './bootstrap.js';
import { cniTemplateArgs } from './image-check.js';
import { Host } from './host.js';

/*
 * ferry install --dry-run: what a real run checks before it changes anything (the signature, the
 * answers against the bundle, the architecture, the images kubeadm and the charts ask for), then
 * the real run's own steps against a RecordingHost: every file they would write and every command
 * and apply they would run, recorded instead of done. The unpack step records the tree it would
 * unpack; later steps read that tree's entries from the verified bundle itself.
 */

export interface DryRunFindings {
  signer: string;
  manifest: BundleManifest;
  /** Refusals: a real run would stop on each. */
  problems: FerryError[];
  /** Each step, todo or done, as the recorded run met it (empty when there are problems). */
  steps: PlanEntry[];
  /** Every file the steps would leave written (a bundle's unpacked tree is in `unpacked`). */
  files: RecordedFile[];
  /** Where the bundle would be unpacked, and the files of that tree, relative to it. */
  unpacked?: { into: string; files: string[] };
  /** Commands, applies and waits, in order. */
  actions: string[];
  recorded: Recorded[];
}


/**
 * The images the CNI chart and the bootstrap chart ask for with these answers: both charts and this
 * arch's helm are copied out of the verified bundle into a temporary directory, rendered there by
 * that helm exactly as the real run's images check does, and the directory is removed. What cannot
 * be rendered is a refusal, as it would be on a real run.
 */
interface ChartFindings {
  needs: ImageNeed[];
  problems: FerryError[];
  /** The bundle has no helm for this arch to render the charts with. */
  noHelm: boolean;
  /** The bootstrap chart's objects with these answers, as the bootstrap step will apply them. */
  bootstrap?: KubernetesObject[];
}

async function chartNeeds(ctx: InstallContext, v: VerifyResult, places: Map<string, EntryPlace>): Promise<ChartFindings> {
  const { answers } = ctx;
  const m = v.manifest;
  const needs: ImageNeed[] = [];
  const problems: FerryError[] = [];
  let noHelm = false;
  let bootstrap: KubernetesObject[] | undefined;
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-dry-run-'));
  // helm's own homes in the temporary directory too, so the dry run writes nothing else.
  const host = new Host(ctx.host.root, { ...ctx.host.env, HELM_CACHE_HOME: `${tmp}/helm/cache`, HELM_CONFIG_HOME: `${tmp}/helm/config`, HELM_DATA_HOME: `${tmp}/helm/data` });
  try {
    const sums = parseChecksums(v.table['checksums.txt'].toString('utf8'));
    const take = async (entry: string, dest: string, mode?: number) => {
      const at = places.get(entry);
      const want = sums.get(entry);
      if (!at || !want) throw refuse(Codes.bundleFormat, `the bundle lists no entry ${entry}`);
      await copyEntry(ctx.bundle, entry, at, want, dest, mode);
      return dest;
    };
    const chartTgz = async (manifestDigest: string) => {
      const man = await take(`images/blobs/${manifestDigest.replace(':', '/')}`, path.join(tmp, `${manifestDigest.slice(7, 19)}.json`));
      const parsed = parseManifest(await fs.readFile(man), '', manifestDigest);
      const layer = parsed.kind === 'manifest' ? parsed.manifest.layers.find((l) => l.mediaType === MediaType.helmChart) : undefined;
      if (!layer) throw refuse(Codes.bundleFormat, `manifest ${manifestDigest} is not a Helm chart`);
      return take(`images/blobs/${layer.digest.replace(':', '/')}`, path.join(tmp, `${layer.digest.slice(7, 19)}.tgz`));
    };
    const arch = `linux/${archOf()}`;
    const helmOf = async (): Promise<string | undefined> => {
      if (ctx.host.env.FERRY_HELM) return ctx.host.env.FERRY_HELM;
      const f = m.files.find((x) => x.name === 'helm' && x.platform === arch);
      if (!f) {
        noHelm = true;
        return undefined;
      }
      if (!f.archive) return take(f.path, path.join(tmp, 'helm'), 0o755);
      // Unpacked as the binaries step does: the executable named helm, wherever the archive keeps it.
      const dir = path.join(tmp, 'helm-bin');
      await fs.mkdir(dir);
      await untar({ file: await take(f.path, path.join(tmp, 'helm.tgz')), cwd: dir, filter: (p: string) => path.basename(p) === 'helm', onReadEntry: (e: { path: string }) => void (e.path = 'helm') } as Parameters<typeof untar>[0]);
      return path.join(dir, 'helm');
    };
    const settle = async (f: () => Promise<void>) => {
      try {
        await f();
      } catch (e) {
        if (!(e instanceof FerryError)) throw e;
        problems.push(e);
      }
    };
    const chart = answers.cni ? m.charts.find((c) => c.name === answers.cni) : undefined;
    const hasBootstrap = m.charts.some((c) => c.name === BOOTSTRAP_CHART);
    const helm = chart || hasBootstrap ? await helmOf() : undefined;
    if (chart && helm) {
      await settle(async () => {
        const t = await host.run(helm, cniTemplateArgs(answers, chart.name, await chartTgz(chart.digest)), { allowFail: true, timeoutMs: 120_000 });
        if (t.code !== 0) throw new UsageError(Codes.chartInvalid, `helm template of the CNI chart ${chart.name} failed (exit ${t.code}): ${t.stderr.trim().split('\n').slice(-2).join(' / ')}`, { hint: 'Check the chart with `helm lint` and `helm template`, and build the bundle again.' });
        needs.push(...imagesInManifests(t.stdout, `chart ${chart.name} ${chart.version}`));
      });
    }
    await settle(async () => {
      // Only the chart is checked here: helm was settled above (a missing one is named with the units' binaries).
      const from = await bundledBootstrapChart(new Host(host.root, { ...host.env, FERRY_HELM: helm ?? 'helm' }), m, chartTgz);
      if (!helm) return;
      const objects = await renderBootstrap(bootstrapValues(answers, m, await clusterNodes(ctx.host, answers)), { chart: from.chart, helm }, host);
      needs.push(...imagesInObjects(objects, `${BOOTSTRAP_CHART} (the DNS and LB DaemonSets)`));
      bootstrap = objects;
    });
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
  return { needs, problems, noHelm, bootstrap };
}

function problemsOf(ctx: InstallContext, m: BundleManifest, charts: ChartFindings): FerryError[] {
  const { answers } = ctx;
  const out: FerryError[] = [];
  const arch = `linux/${archOf()}`;
  if (answers.cni && !m.charts.some((c) => c.name === answers.cni)) {
    out.push(new UsageError(Codes.chartNotFound, `the answers choose the CNI ${answers.cni}, but the bundle carries no chart of that name`, { hint: `Choose one of: ${m.charts.map((c) => c.name).join(', ') || '(none)'}.` }));
  }
  const missingBins = [...unitBinariesMissing(m.files), ...(charts.noHelm ? [`helm (for the ${[answers.cni, BOOTSTRAP_CHART].filter(Boolean).join(' and ')} charts)`] : [])];
  if (missingBins.length) out.push(new UsageError(Codes.bundleBinaryMissing, `the bundle carries no ${missingBins.join(', ')} for ${arch}`, { hint: 'Add each binary to spec.binaries for this platform and build the bundle again.' }));
  const needs: ImageNeed[] = [];
  if (m.kubernetes?.version) {
    const version = kubernetesVersionOf(m);
    needs.push(...kubeadmImages(version, m.kubernetes.imageRepository).map((ref) => ({ ref, by: `kubeadm ${version}` })));
  } else {
    out.push(new SpecError(Codes.kubernetesUnsupported, 'the bundle names no Kubernetes release (its spec has no spec.kubernetes)', { hint: 'Install a bundle built from a spec with spec.kubernetes.version.' }));
  }
  out.push(...charts.problems);
  // One refusal naming every missing image, kubeadm's and the charts' alike.
  const missing = missingImages([...needs, ...charts.needs], m.images.map((i) => ({ ref: i.ref, digest: i.digest })));
  if (missing.length) out.push(imagesMissingError(missing, 'the bundle does not carry', 'Add each image to spec.images, run `ferry lock` and `ferry bundle build` again.'));
  return out;
}

/** The verified bundle as the tree unpack would make of it, read entry by entry. */
function bundleEntries(file: string, v: VerifyResult, places: Map<string, EntryPlace>, tmp: string): BundleEntries {
  const sums = parseChecksums(v.table['checksums.txt'].toString('utf8'));
  // What unpack writes besides the entries: the signed table and its marker (bundle/unpack.ts).
  const marker = Buffer.from(`${JSON.stringify({ bundle: bundleId(v.manifest), created: v.manifest.created, checksums: sha256Hex(v.table['checksums.txt']), signer: v.fingerprint })}\n`);
  const small = new Map<string, Buffer>([...Object.entries(v.table), [UNPACKED_MARKER, marker]]);
  const files = new Map<string, number>([...[...places].map(([p, at]) => [p, at.size] as const), ...[...small].map(([p, b]) => [p, b.length] as const)]);
  let n = 0;
  const copyOut = async (rel: string, dest: string) => {
    const b = small.get(rel);
    if (b) return fs.writeFile(dest, b);
    const at = places.get(rel);
    const want = sums.get(rel);
    if (!at || !want) throw refuse(Codes.bundleFormat, `the bundle lists no entry ${rel}`);
    await copyEntry(file, rel, at, want, dest);
  };
  return {
    file,
    files,
    summary: { manifest: v.manifest, fingerprint: v.fingerprint, entries: v.entries },
    copyOut,
    read: async (rel) => {
      if (small.has(rel)) return small.get(rel);
      if (!places.has(rel)) return undefined;
      const dest = path.join(tmp, `entry-${n++}`);
      await copyOut(rel, dest);
      try {
        return await fs.readFile(dest);
      } finally {
        await fs.rm(dest, { force: true });
      }
    },
  };
}

/** Runs the first server's steps against a RecordingHost: checks as they are, applies recorded. */
async function recordSteps(ctx: InstallContext, entries: BundleEntries, bootstrapObjects: KubernetesObject[] | undefined): Promise<Pick<DryRunFindings, 'steps' | 'files' | 'unpacked' | 'actions' | 'recorded' | 'problems'>> {
  // The bootstrap chart was rendered above, by the bundle's helm: the steps' helm template gets that.
  const rendered = bootstrapObjects?.map((o) => `---\n${stringify(o)}`).join('');
  const host = new RecordingHost(ctx.host.root, ctx.host.env, {
    bundle: entries,
    respond: (_cmd, args) => (rendered && args[0] === 'template' && args[1] === BOOTSTRAP_CHART ? { code: 0, stdout: rendered, stderr: '' } : undefined),
  });
  const steps: PlanEntry[] = [];
  const problems: FerryError[] = [];
  try {
    for (const s of firstServerSteps({ ...ctx, host })) {
      const done = await s.check().catch(() => false);
      steps.push({ id: s.id, title: s.title, done, status: done ? 'done' : 'todo' });
      // The check-only step (preflight) ran first, in dryRun, as the real run's first step.
      if (done || s.always || problems.length) continue;
      try {
        await s.apply(() => {});
      } catch (e) {
        if (!(e instanceof FerryError)) throw new HostError(Codes.installStep, `step "${s.title}" failed in the dry run: ${(e as Error).message}`, { hint: 'A real run would stop here too. Fix the cause and dry-run again.', cause: e });
        problems.push(e.withContext(`step "${s.title}" failed`, 'A real run would stop here too. Fix the cause and dry-run again.'));
      }
    }
    const unpack = host.recorded.find((r) => r.kind === 'unpack');
    const all = host.files();
    const inTree = (p: string) => !!unpack && p.startsWith(`${unpack.into}/`);
    return {
      steps,
      problems,
      files: all.filter((f) => !inTree(f.path)),
      ...(unpack?.kind === 'unpack' ? { unpacked: { into: unpack.into, files: all.filter((f) => inTree(f.path)).map((f) => f.path.slice(unpack.into.length + 1)) } } : {}),
      actions: host.actions(),
      recorded: host.recorded,
    };
  } finally {
    await host.close();
  }
}

/** Verifies the bundle (a missing one is an error), checks it against the answers, then records the real run's steps. */
export async function dryRun(ctx: InstallContext): Promise<DryRunFindings> {
  const places = new Map<string, EntryPlace>();
  const v = await verifyBundle(ctx.bundle, { trust: ctx.verify.trust, confirm: ctx.verify.confirm, reporter: ctx.reporter, onEntry: (p, at) => void places.set(p, at) });
  const m = v.manifest;
  const charts = await chartNeeds(ctx, v, places);
  // The real run's first step, with its refusal and its warnings: a dry run passes only where it would.
  const pre: FerryError[] = [];
  await preflightCheck(ctx, m, cgroupsOnce(ctx.host), { dryRun: true }).catch((e: unknown) => {
    if (!(e instanceof FerryError)) throw e;
    pre.push(e);
  });
  const found = { signer: v.fingerprint, manifest: m, problems: [...pre, ...problemsOf(ctx, m, charts)] };
  if (found.problems.length) return { ...found, steps: [], files: [], actions: [], recorded: [] };
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'ferry-dry-run-'));
  try {
    return { ...found, ...(await recordSteps(ctx, bundleEntries(ctx.bundle, v, places, tmp), charts.bootstrap)) };
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}
