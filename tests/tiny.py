"""The small synthetic instance the tests share (a module, so helpers outside conftest can
import it too)."""

# A small synthetic instance: big enough to learn something, small enough for seconds.
TINY_DATA = [
    "data.source.n_train=6000",
    "data.source.n_val=2000",
    "data.source.n_test=2000",
    "data.source.vocab_sizes=[30,20,10,5,5]",
    "data.source.n_numeric=2",
    "data.source.n_pairs=3",
    "data.source.n_triples=1",
    "data.batch_size=512",
    "data.eval_batch_size=1024",
]
