// A modal dialog (the native <dialog>, opened with showModal: focus is trapped and Escape closes it),
// named by its title for assistive technology.
import type { ComponentChildren } from 'preact';
import { useEffect, useRef } from 'preact/hooks';

let next = 0;

export function Dialog({ title, onClose, children, wide }: { title: string; onClose: () => void; children: ComponentChildren; wide?: boolean }) {
  const ref = useRef<HTMLDialogElement>(null);
  const id = useRef(`dialog-${++next}`);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => d?.close();
  }, []);
  return (
    <dialog
      ref={ref}
      class={`modal${wide ? ' wide' : ''}`}
      aria-labelledby={id.current}
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
    >
      <h2 id={id.current}>{title}</h2>
      {children}
    </dialog>
  );
}
