//! The TPM structure parsers on the same bytes: TPMS_ATTEST, TPMT_SIGNATURE,
//! TPMT_PUBLIC and TPM2B_PUBLIC. Whatever parses is used the way the
//! verifier uses it, and a TPMS_ATTEST re-marshals to exactly its input
//! (the parser accepts one byte form per quote).
#![no_main]

use attestation_proto::tpm::{Attest, PcrSelection, PublicArea, Signature};
use attestation_proto_fuzz::{Quote, ak_public, marshal_signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Attest::parse(data) {
        assert_eq!(Quote::of(&a).marshal(), data);
        for bank in &a.pcr_select {
            let pcrs = bank.pcrs();
            assert!(pcrs.len() <= bank.bitmap.len() * 8);
            assert!(pcrs.iter().all(|&p| bank.contains(p)));
        }
        let _ = a.pcr_select.iter().map(PcrSelection::pcrs).count();
    }
    if let Ok(sig) = Signature::parse(data) {
        assert_eq!(Signature::parse(&marshal_signature(&sig.r, &sig.s)), Ok(sig.clone()));
        let _ = sig.to_der();
        if let Ok(ak) = PublicArea::parse(&ak_public()) {
            let _ = ak.verify(data, &sig);
        }
    }
    for p in [PublicArea::parse(data), PublicArea::parse_tpm2b(data)].into_iter().flatten() {
        assert_eq!(p.name().len(), 34);
        let _ = p.is_restricted_signing_key();
        let _ = p.to_spki_pem();
        if let Ok(sig) = Signature::parse(data) {
            let _ = p.verify(data, &sig);
        }
    }
    if let Ok(p) = PublicArea::parse(data) {
        assert_eq!(p.raw(), data);
    }
});
