"""A task of your own: an MLP on scikit-learn's iris flowers (150 examples, bundled).

Run it with ``lookbench run docs/examples/iris_task.py:Iris --workers 2``. lookbench calls
``workload`` once per trial with a batch size, a device and the trial's seed; the seed must
decide the model's initialisation, and the ``generator`` it passes to ``train_batches`` the data
order, so that seed s means the same start and the same batches for every optimizer.
"""

import torch
from sklearn.datasets import load_iris
from torch import nn

from lookbench import Task, Workload


class Iris(Task):
    summary = "MLP on the iris flowers"
    default_epochs = 30
    default_batch_size = 16

    def workload(self, *, batch_size, device, seed, data_dir=None):
        x, y = load_iris(return_X_y=True)
        x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32, device=device)
        y = torch.tensor(y, device=device)
        split = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(device)
        train, test = split[:120], split[120:]  # fixed: every trial is judged on the same 30
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3)).to(device)

        def train_batches(epoch, generator):
            order = train[torch.randperm(len(train), generator=generator, device=device)]
            for i in range(0, len(order), batch_size):
                yield order[i : i + batch_size]

        def loss(model, idx):
            return nn.functional.cross_entropy(model(x[idx]), y[idx])

        def evaluate(model):
            logits = model(x[test])
            return {"test_loss": float(nn.functional.cross_entropy(logits, y[test])),
                    "test_acc": float((logits.argmax(1) == y[test]).float().mean())}

        return Workload(model=model, steps_per_epoch=-(-len(train) // batch_size),
                        train_batches=train_batches, loss=loss, evaluate=evaluate)
