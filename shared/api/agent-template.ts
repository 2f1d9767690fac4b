// AgentTemplate (cluster-scoped): the containers Stash runs to back up or recover a target.
import { z } from 'zod';
import { API_VERSION, dnsLabelName, envVar, imagePullPolicy, objectMeta, passthroughObject, resourceRequirements } from './common.ts';

export const volumeMount = z.strictObject({
  name: dnsLabelName('volumeMounts.name'),
  mountPath: z.string().regex(/^\//, { error: 'volumeMounts.mountPath must be an absolute path' }),
  subPath: z.string().optional(),
  readOnly: z.boolean().optional(),
});

/**
 * The fields of a Kubernetes Container that Stash reads; deep ones (securityContext, ports,
 * envFrom, probes are not allowed) pass through untyped and are checked by the apiserver when the
 * Pod is created.
 */
export const container = z.strictObject({
  name: dnsLabelName('container name'),
  image: z.string().min(1, { error: 'image must not be empty' }),
  command: z.array(z.string()).max(64).optional(),
  args: z.array(z.string()).max(256).optional(),
  workingDir: z.string().optional(),
  env: z.array(envVar).max(128).optional(),
  envFrom: z.array(passthroughObject('a Kubernetes EnvFromSource')).max(32).optional(),
  volumeMounts: z.array(volumeMount).max(64).optional(),
  resources: resourceRequirements.optional(),
  securityContext: passthroughObject('a Kubernetes SecurityContext').optional(),
  imagePullPolicy: imagePullPolicy.optional(),
  ports: z.array(passthroughObject('a Kubernetes ContainerPort')).max(32).optional(),
});
export type Container = z.infer<typeof container>;

export const agentTemplateSpec = z.strictObject({
  initContainers: z.array(container).max(16).optional(),
  containers: z.array(container).min(1, { error: 'containers must list at least one container' }).max(16),
});

export const agentTemplate = z.object({
  apiVersion: z.literal(API_VERSION),
  kind: z.literal('AgentTemplate'),
  metadata: objectMeta,
  spec: agentTemplateSpec,
});
export type AgentTemplate = z.infer<typeof agentTemplate>;
export type AgentTemplateSpec = z.infer<typeof agentTemplateSpec>;
