import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { serve, NBD_PORT, type ServeOptions } from '../api/serve.js';
import { serveVm } from '../api/serve-vm.js';
import { setFileWriteMode } from '../io/file-source.js';
import { DiskchainError } from '../io/errors.js';
import { EXIT, type Run } from './output.js';
import { untilStopSignal } from './stop-signal.js';
import { sourceFormat, sourceFormatOption } from './formats.js';
import { IGNORE_ID_OPTION, SEARCH_PATH_OPTION, searchPathOptions } from './search-path.js';

interface ServeFlags {
  socket?: string;
  port?: string;
  bind?: string;
  allowRemote?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  writable?: boolean;
  exportName?: string;
  json?: boolean;
  verbose?: boolean;
  searchPath?: string[];
  ignoreIdMismatch?: boolean;
  sourceFormat?: string;
  vm?: string;
  checkpoint?: string;
}

export function registerServeCommands(program: Command, run: Run): void {
  program
    .command('serve')
    .description(
      'serve a disk, read through its whole chain, over NBD to qemu, qemu-img, nbdcopy, nbdinfo or the kernel (read-only unless --writable); ' +
        'prints where it listens once it accepts connections; Ctrl-C or SIGTERM flushes, closes and exits 0',
    )
    .argument('[disk]', 'the disk (or --vm)')
    .option('--vm <folder>', "serve every disk of a VM that is not running, one export per disk named by its id (disk0, ...): Now's disks, or a checkpoint's with --checkpoint")
    .option('--checkpoint <checkpoint>', 'with --vm: the disks as this checkpoint (id or name) froze them, read-only')
    .option('--socket <path>', 'listen on this unix socket (mode 0600)')
    .option('--port <n>', `listen on this TCP port (default ${NBD_PORT}; 0 picks a free one)`)
    .option('--bind <address>', 'the TCP address (default 127.0.0.1)')
    .option('--allow-remote', 'allow a --bind address other than loopback; TLS (--tls-cert, --tls-key) is then required, because NBD has no authentication')
    .option('--tls-cert <file>', 'PEM certificate: clients must start TLS before anything else')
    .option('--tls-key <file>', 'PEM private key of --tls-cert')
    .option('--tls-client-ca <file>', 'PEM CA certificate: clients must present a certificate it signed (without it, TLS encrypts but does not say who may connect)')
    .option('--writable', 'let clients write into the leaf (refused when another disk depends on it)')
    .option('--export-name <name>', 'the export name (default: the disk\'s file name; the empty name also reaches it)')
    .option('--json', 'print one JSON line once listening')
    .option('--verbose', 'report connection errors and disconnected clients on stderr')
    .addOption(sourceFormatOption())
    .option(...SEARCH_PATH_OPTION)
    .option(...IGNORE_ID_OPTION)
    .action((diskArg: string | undefined, opts: ServeFlags) =>
      run(async () => {
        // Many clients share this process: a slow device must not stall the others' reads (see FileWriteMode),
        // and requests in flight are read in parallel: libuv's 4 threads by default, 16 here (read when the
        // pool starts, at the first file operation, which is after this line).
        setFileWriteMode('thread-pool');
        process.env.UV_THREADPOOL_SIZE ??= '16';
        if ((diskArg === undefined) === (opts.vm === undefined)) throw new DiskchainError('INVALID_ARGUMENT', 'serve a disk or a VM (--vm <folder>), one of them');
        if (opts.checkpoint !== undefined && opts.vm === undefined) throw new DiskchainError('INVALID_ARGUMENT', '--checkpoint goes with --vm');
        if (opts.vm !== undefined && (opts.exportName !== undefined || opts.sourceFormat !== undefined)) throw new DiskchainError('INVALID_ARGUMENT', "--vm names each export by its disk's id and knows each disk's format");
        const disk = diskArg ?? opts.vm!;
        const options = await serveOptions(opts);
        const handle = opts.vm !== undefined ? await serveVm(opts.vm, { ...options, ...(opts.checkpoint !== undefined ? { checkpoint: opts.checkpoint } : {}) }) : await serve(disk, options);
        if (opts.allowRemote && !opts.tlsClientCa) {
          process.stderr.write('diskchain serve: warning: listening beyond loopback without --tls-client-ca: TLS encrypts, but anyone who reaches the port can read the disk\n');
        }
        const stopped = untilStopSignal();
        const [exp] = handle.exports;
        const line = {
          disk,
          writable: !exp!.readOnly,
          size: exp!.size,
          ...(opts.vm !== undefined ? { exports: handle.exports.map((e) => ({ name: e.name, size: e.size, writable: !e.readOnly })) } : {}),
          ...handle.address,
        };
        if (opts.json) process.stdout.write(JSON.stringify(line) + '\n');
        else {
          const where = handle.address.socket ?? `${handle.address.host}:${handle.address.port}`;
          process.stdout.write(`serving ${disk} (${line.writable ? 'writable' : 'read-only'}, ${exp!.size} bytes) on ${where}${handle.address.tls ? ' with TLS' : ''}\n`);
          for (const [name, uri] of Object.entries(handle.address.uris)) process.stdout.write(`  export "${name}": ${uri}\n`);
        }
        await stopped;
        await handle.close();
        if (!opts.json) process.stderr.write('stopped: disks flushed and closed\n');
        return EXIT.ok;
      }, opts.json ?? false),
    );
}

async function serveOptions(opts: ServeFlags): Promise<ServeOptions> {
  if ((opts.tlsCert === undefined) !== (opts.tlsKey === undefined)) throw new DiskchainError('INVALID_ARGUMENT', '--tls-cert and --tls-key go together');
  if (opts.tlsClientCa !== undefined && opts.tlsCert === undefined) throw new DiskchainError('INVALID_ARGUMENT', '--tls-client-ca needs --tls-cert and --tls-key');
  if (opts.socket !== undefined && (opts.port !== undefined || opts.bind !== undefined)) throw new DiskchainError('INVALID_ARGUMENT', '--socket excludes --port and --bind');
  const port = opts.port === undefined ? undefined : Number(opts.port);
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) throw new DiskchainError('INVALID_ARGUMENT', `--port must be 0..65535, not ${opts.port}`);
  const readPem = async (path: string, what: string): Promise<Buffer> => {
    try {
      return await readFile(path);
    } catch (e) {
      throw new DiskchainError('INVALID_ARGUMENT', `cannot read the TLS ${what} ${path}: ${(e as Error).message}`, { file: path });
    }
  };
  return {
    ...(opts.socket !== undefined ? { socket: opts.socket } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(opts.bind !== undefined ? { host: opts.bind } : {}),
    allowRemote: opts.allowRemote ?? false,
    ...(opts.tlsCert && opts.tlsKey
      ? {
          tls: {
            cert: await readPem(opts.tlsCert, 'certificate'),
            key: await readPem(opts.tlsKey, 'key'),
            ...(opts.tlsClientCa ? { clientCa: await readPem(opts.tlsClientCa, 'client CA') } : {}),
          },
        }
      : {}),
    writable: opts.writable ?? false,
    ...(opts.exportName !== undefined ? { exportName: opts.exportName } : {}),
    ...(opts.verbose ? { log: (m: string) => process.stderr.write(`diskchain serve: ${m}\n`) } : {}),
    ...(await searchPathOptions(opts)),
    ...sourceFormat(opts),
  };
}
