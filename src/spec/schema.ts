/**
 * The JSON Schema for bundle specs. `bundle-spec/bundle-spec.schema.json` is generated from this
 * (`ferry spec schema > bundle-spec/bundle-spec.schema.json`; a test keeps them equal), so editors
 * complete the same shape that ferry validates.
 */
const platform = {
  type: 'string',
  pattern: '^linux/(amd64|arm64|arm|ppc64le|s390x|riscv64|386)(/v[5-8])?$',
  description: 'A target platform, os/arch[/variant], for example linux/amd64 or linux/arm64.',
};
/**
 * A name or version that becomes one path segment in the bundle (files/<name>/<version>/…) and in
 * the site's /files/ URLs: portable file-name characters only, so never `.`, `..`, `/` or `\`.
 */
export const PATH_SEGMENT = '^[0-9A-Za-z][0-9A-Za-z._+~-]{0,127}$';
const semverish = {
  type: 'string',
  pattern: PATH_SEGMENT,
  description: 'A version, for example v1.37.2. It names a directory in the bundle: letters, digits and . _ + ~ -, starting with a letter or digit.',
};
const sha256hex = { type: 'string', pattern: '^[a-f0-9]{64}$', description: 'A sha256 as 64 lowercase hex characters.' };
const url = {
  type: 'string',
  minLength: 1,
  description: 'An https://, http://, file:// URL or a plain path. {version}, {os} and {arch} are expanded.',
};

export const bundleSpecSchema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://ferry.dev/schemas/bundle-spec.v1alpha1.json',
  title: 'ferry BundleSpec',
  description: 'What a ferry bundle carries across the air gap.',
  type: 'object',
  additionalProperties: false,
  required: ['apiVersion', 'kind', 'metadata', 'spec'],
  properties: {
    apiVersion: { const: 'ferry.dev/v1alpha1', description: 'Always ferry.dev/v1alpha1.' },
    kind: { const: 'BundleSpec', description: 'Always BundleSpec.' },
    metadata: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'version'],
      description: 'Names the bundle: <name>-<version>.ferry.tar.',
      properties: {
        name: { type: 'string', pattern: '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$', description: 'A DNS label: lowercase letters, digits and -.' },
        version: { type: 'string', pattern: '^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$', description: 'The bundle version, for example 0.1.0.' },
        description: { type: 'string', description: 'Free text shown by `ferry bundle inspect`.' },
      },
    },
    spec: {
      type: 'object',
      additionalProperties: false,
      required: ['platforms', 'images'],
      properties: {
        platforms: {
          type: 'array',
          minItems: 1,
          uniqueItems: true,
          items: platform,
          description: 'Every platform the site runs. Images are fetched for each, unless an image lists its own.',
        },
        kubernetes: {
          type: 'object',
          additionalProperties: false,
          required: ['version'],
          description: 'The Kubernetes release the bundle installs.',
          properties: {
            version: { type: 'string', pattern: '^v[0-9]+\\.[0-9]+\\.[0-9]+$', description: 'A Kubernetes release from v1.35 to v1.37, for example v1.37.2.' },
            imageRepository: { type: 'string', description: 'Where kubeadm expects its images; default registry.k8s.io.' },
          },
        },
        images: {
          type: 'array',
          description: 'Container images, by tag or digest. `ferry lock` pins each to a digest in images.lock.',
          items: {
            oneOf: [
              { type: 'string', minLength: 1, description: 'An image reference, for example registry.k8s.io/pause:3.10.' },
              {
                type: 'object',
                additionalProperties: false,
                required: ['ref'],
                description: 'An image with options.',
                properties: {
                  ref: { type: 'string', minLength: 1, description: 'An image reference, for example docker.io/library/haproxy:2.9.' },
                  platforms: { type: 'array', minItems: 1, uniqueItems: true, items: platform, description: 'Only these platforms of this image.' },
                },
              },
            ],
          },
        },
        binaries: {
          type: 'array',
          description: 'Files fetched by URL and checked by sha256 (kubeadm, kubelet, containerd …).',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['name', 'version', 'url'],
            properties: {
              name: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]*$', description: 'The file name on the node.' },
              version: semverish,
              url,
              checksumUrl: { ...url, description: 'A URL to a sha256 file for the download.' },
              checksumFile: { type: 'string', description: 'With checksumUrl: a SHA256SUMS-style file that lists many files.' },
              sha256: {
                type: 'object',
                description: 'Pinned sha256 per platform.',
                propertyNames: platform,
                additionalProperties: sha256hex,
              },
              extract: { type: 'boolean', description: 'The download is a .tar.gz to unpack on the node.' },
            },
          },
        },
        charts: {
          type: 'array',
          description: 'Helm charts: from an HTTP repo, an OCI registry, or a local path.',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['name'],
            properties: {
              name: { type: 'string', pattern: '^(oci://.+|[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)$', description: 'The chart name (lowercase letters, digits and . _ -), or oci://host/path/name.' },
              repo: { type: 'string', description: 'An HTTP Helm repository (its index.yaml is read).' },
              version: { type: 'string', description: 'A version or a semver range such as 1.16.x.' },
              path: { type: 'string', description: 'A local chart directory, such as charts/ferry-bootstrap.' },
            },
          },
        },
        runtime: {
          type: 'object',
          additionalProperties: false,
          description: 'The Node.js runtime the bundle carries.',
          properties: {
            node: {
              type: 'object',
              description: 'Per platform, a path or URL that overrides where the runtime comes from.',
              propertyNames: platform,
              additionalProperties: { type: 'string' },
            },
          },
        },
      },
    },
  },
} as const;
