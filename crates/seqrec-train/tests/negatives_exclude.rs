//! `eval.negatives_exclude = "train"`: SASRec's reference protocol lets the validation item be a
//! test negative, which the default (`seen`) never does.

use seqrec_data::{Dataset, Split, Vocab};
use seqrec_metrics::Cutoffs;
use seqrec_models::{Model, MostPop};
use seqrec_train::run::eval_settings;
use seqrec_train::{
    EvalSettings, NegativesExclude, Protocol, Stage, TrainConfig, evaluate, popularity_before,
};

#[test]
fn train_only_negatives_can_be_the_validation_item() {
    let users = Vocab::from_originals((0..3).map(|u| u.to_string()).collect()).unwrap();
    let items = Vocab::from_originals((0..6).map(|i| i.to_string()).collect()).unwrap();
    // User 1: training [1], validation 2, test 3. Users 2 and 3 make item 2 the most popular and
    // item 3 the second, so MostPop ranks the target 3 first unless item 2 is a candidate.
    let ds = Dataset::from_sequences(
        users,
        items,
        vec![
            (vec![1, 2, 3], vec![0, 1, 2]),
            (vec![2, 2, 3, 4, 5], vec![0, 1, 2, 3, 4]),
            (vec![2, 3, 2, 6, 4], vec![0, 1, 2, 3, 4]),
        ],
    )
    .unwrap();
    let split = Split::leave_one_out(&ds);
    let train = split.train_sequences(&ds).unwrap();
    let mut model = MostPop::new(&train);
    model.train_epoch(&train, 0, &mut |_| {}).unwrap();
    let pop = popularity_before(&ds, &split, Stage::Test);
    let cases = &split.test()[..1];
    assert_eq!((cases[0].user, cases[0].target(&ds)), (1, 3));
    let base = EvalSettings {
        protocol: Protocol::SampledUniform,
        negatives: 3,
        negatives_seed: 5,
        cutoffs: Cutoffs::new(vec![1]).unwrap(),
        batch_size: 8,
        ..eval_settings(&TrainConfig::default()).unwrap()
    };
    assert_eq!(
        base.negatives_exclude,
        NegativesExclude::Seen,
        "the default"
    );
    // Seen: the negatives are items 4, 5, 6, all less popular than the target.
    let seen = evaluate(&mut model, &ds, cases, &pop, &base).unwrap();
    assert_eq!(seen.metrics.ranks, [0]);

    // Train: 40 draws with replacement from {2, 4, 5, 6}; every draw of item 2 outranks the target.
    let train_only = EvalSettings {
        negatives: 40,
        negatives_exclude: NegativesExclude::Train,
        ..base
    };
    let err = evaluate(&mut model, &ds, cases, &pop, &train_only).unwrap_err();
    assert!(err.to_string().contains("with_split"), "{err}");
    let train_only = train_only.with_split(&split, ds.n_users());
    let out = evaluate(&mut model, &ds, cases, &pop, &train_only).unwrap();
    let rank = out.metrics.ranks[0];
    assert!(
        (3..=20).contains(&rank),
        "about 10 of 40 draws are item 2, got rank {rank}"
    );
}
