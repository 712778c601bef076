//! The vsock device's rings as the guest leaves them in its memory: the
//! input is the guest memory image (descriptor tables, available rings,
//! packet headers and payloads, anything) and the queue sizes; the device
//! processes tx and rx against a real host side (a listener on port 1024 that
//! echoes, host connections asking for guest ports) for a few rounds. Never a
//! panic, an access outside guest memory or an unbounded allocation; a corrupt
//! ring only breaks the guest's own device.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use zone_vmm::devices::virtio::vsock::queues::{QUEUE_SIZE, Queues};
use zone_vmm_fuzz::{interrupt, memory, process, with_host};

/// Where the rings are: rx, tx, event, 16 KiB apart; buffers may be anywhere.
const RING_BASE: [u64; 3] = [0x0000, 0x4000, 0x8000];

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (config, image) = data.split_at(4);
    let mem = memory(image);
    let queues: Vec<Queue> = (0..3)
        .map(|i| {
            let mut q = Queue::new(QUEUE_SIZE).unwrap();
            // A power of two up to the maximum (the transport refuses others).
            let size = 1u16 << (config[i] % 9);
            q.set_size(size);
            q.set_desc_table_address(Some(RING_BASE[i] as u32), Some(0));
            q.set_avail_ring_address(Some((RING_BASE[i] + 0x1000 + u64::from(config[3] & 0x8)) as u32), Some(0));
            q.set_used_ring_address(Some((RING_BASE[i] + 0x2000) as u32), Some(0));
            q.set_ready(true);
            assert!(q.is_valid(&mem), "the rings fit guest memory");
            q
        })
        .collect();
    let mut queues = Queues::new(mem, queues, interrupt()).unwrap();
    with_host(|host| {
        if config[3] & 1 != 0 {
            host.connect_to_guest(u32::from(config[3]) << 4, b"hello guest");
        }
        if process(&mut queues, host) {
            process(&mut queues, host);
        }
    });
});
