/**
 * Whether `path` is an absolute Win32 path, the only kind Hyper-V can follow in a VHDX
 * absolute_win32_path entry or a VHD W2ku locator: a drive path (C:\dir\f.vhdx) or a UNC or
 * device path (\\server\share\f.vhdx, \\?\C:\f.vhdx). A POSIX path is none of these; written there,
 * Windows would read "/srv/a.vhdx" as \srv\a.vhdx on its current drive (docs/formats/vhdx.md,
 * "Parent paths written on Linux").
 */
export function isWin32Absolute(path: string): boolean {
  return /^[A-Za-z]:\\/.test(path) || /^\\\\[^\\]/.test(path);
}
