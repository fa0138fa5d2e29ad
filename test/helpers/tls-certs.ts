/** A throwaway CA and a server certificate for 127.0.0.1 / localhost, made with openssl, for the TLS tests. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
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
