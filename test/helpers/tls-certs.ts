/** A throwaway CA and a server certificate for 127.0.0.1 / localhost, made with openssl, for the TLS tests. */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Writes ca-cert.pem, server-cert.pem and server-key.pem into `<dir>/certs` (the layout qemu and libnbd read) and returns that folder. */
export function makeCertificates(dir: string): string {
  const certs = join(dir, 'certs');
  mkdirSync(certs, { recursive: true });
  const o = (args: string[]): void => void execFileSync('openssl', args, { cwd: certs, stdio: 'pipe' });
  o(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-days', '2', '-subj', '/CN=diskchain test CA']);
  o(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server-key.pem', '-out', 'server.csr', '-subj', '/CN=localhost']);
  writeFileSync(join(certs, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n');
  o(['x509', '-req', '-in', 'server.csr', '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', 'server-cert.pem', '-days', '2', '-extfile', 'ext.cnf']);
  return certs;
}

/**
 * A client certificate signed by the CA of `makeCertificates(dir)`, in a folder of its own with the CA
 * (ca-cert.pem, client-cert.pem, client-key.pem: what qemu's tls-creds-x509 and libnbd load). Returns it.
 */
export function makeClientCertificate(dir: string): string {
  const certs = join(dir, 'certs');
  const client = join(dir, 'client-certs');
  mkdirSync(client, { recursive: true });
  const o = (args: string[]): void => void execFileSync('openssl', args, { cwd: client, stdio: 'pipe' });
  o(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'client-key.pem', '-out', 'client.csr', '-subj', '/CN=diskchain test client']);
  writeFileSync(join(client, 'ext.cnf'), 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n');
  o(['x509', '-req', '-in', 'client.csr', '-CA', join(certs, 'ca-cert.pem'), '-CAkey', join(certs, 'ca-key.pem'), '-CAcreateserial', '-out', 'client-cert.pem', '-days', '2', '-extfile', 'ext.cnf']);
  copyFileSync(join(certs, 'ca-cert.pem'), join(client, 'ca-cert.pem'));
  return client;
}
