// AppBinding (appcatalog.appscode.com/v1alpha1): how to reach a database and which Secret logs in.
import { z } from 'zod';
import { APPCATALOG_API_VERSION, dnsLabelName, dnsSubdomainName, exactlyOne, objectMeta, passthroughObject, withRules } from './common.ts';

export const clientConfig = withRules(z.strictObject({
  url: z.string().regex(/^[a-z][a-z0-9+.-]*:\/\/\S+$/, { error: (iss) => `url "${String(iss.input)}" must be an absolute URL such as postgres://host:5432` }).optional(),
  service: z.strictObject({
    name: dnsLabelName('service.name'),
    port: z.int().min(1, { error: 'service.port must be 1-65535' }).max(65535, { error: 'service.port must be 1-65535' }),
    scheme: z.string().regex(/^[a-z][a-z0-9+.-]*$/, { error: 'service.scheme must be a URL scheme such as http or postgres' }).optional(),
    path: z.string().optional(),
  }).optional(),
  caBundle: z.base64().optional().meta({ description: 'PEM bundle, base64-encoded' }),
  insecureSkipTLSVerify: z.boolean().optional(),
}), [exactlyOne(['url', 'service'], 'address')]);

export const APP_TYPE_PATTERN = '^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?$';
export const appBindingSpec = z.strictObject({
  type: z.string().regex(new RegExp(APP_TYPE_PATTERN), { error: (iss) => `type "${String(iss.input)}" must be <group>/<app> such as kubedb.com/postgres, kubedb.com/mysql, kubedb.com/mariadb or kubedb.com/redis` }),
  version: z.string().optional(),
  clientConfig,
  secret: z.strictObject({ name: dnsSubdomainName('secret.name') }).optional(),
  parameters: passthroughObject('app-specific parameters, kept as written').optional(),
});

export const appBinding = z.object({
  apiVersion: z.literal(APPCATALOG_API_VERSION),
  kind: z.literal('AppBinding'),
  metadata: objectMeta,
  spec: appBindingSpec,
});
export type AppBinding = z.infer<typeof appBinding>;
export type AppBindingSpec = z.infer<typeof appBindingSpec>;
