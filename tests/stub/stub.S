/*
 * A tiny PVH guest for VMM tests and benchmarks.
 *
 * Entered in 32-bit protected mode (PVH) with %ebx -> hvm_start_info. It
 * prints "STUB-READY\n" on COM1, then acts on the first character of its
 * kernel command line:
 *   o<d>  power off through the zone power port (0x501) with status <d>
 *   r     reset through the i8042 (0xFE to port 0x64)
 *   p     print a kernel-style panic line, then reset
 *   t     triple fault (load an empty IDT, raise an exception)
 *   h     halt with interrupts off (never wakes: for timeout tests)
 *   e     echo: print the whole command line, then power off with status 0
 *   anything else: reset
 */
    .section .note.Xen, "a"
    .balign 4
    .long 4                  /* namesz: "Xen\0" */
    .long 4                  /* descsz */
    .long 18                 /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long pvh_entry

    .text
    .code32
    .globl pvh_entry
pvh_entry:
    cli
    mov $0x80000, %esp       /* PVH gives no stack: use low RAM below the EBDA */
    mov 24(%ebx), %edi       /* hvm_start_info.cmdline_paddr (low 32 bits) */
    lea ready_msg, %esi
    call puts
    movb (%edi), %cl
    cmpb $'o', %cl
    je poweroff
    cmpb $'r', %cl
    je reset
    cmpb $'p', %cl
    je panic
    cmpb $'t', %cl
    je triple
    cmpb $'h', %cl
    je hang
    cmpb $'e', %cl
    je echo
    jmp reset

poweroff:
    movb 1(%edi), %al
    subb $'0', %al
    mov $0x501, %dx
    outb %al, %dx
    jmp hang

reset:
    mov $0xfe, %al
    outb %al, $0x64
    jmp hang

panic:
    lea panic_msg, %esi
    call puts
    jmp reset

triple:
    lidt null_idt
    xor %eax, %eax           /* #DE with no IDT -> #DF -> shutdown */
    div %eax
    jmp hang

echo:
    mov %edi, %esi
    call puts
    lea newline, %esi
    call puts
    mov $'0', %al
    movb %al, 1(%edi)
    jmp poweroff

hang:
    cli
    hlt
    jmp hang

/* puts: write the NUL-terminated string at %esi to COM1. Clobbers %eax, %edx, %esi. */
puts:
    mov $0x3f8, %dx
1:  lodsb
    testb %al, %al
    jz 2f
    outb %al, %dx
    jmp 1b
2:  ret

    .section .rodata
ready_msg:
    .asciz "STUB-READY\n"
panic_msg:
    .asciz "Kernel panic - not syncing: stub requested a panic\n"
newline:
    .asciz "\n"
    .balign 8
null_idt:
    .word 0
    .long 0
