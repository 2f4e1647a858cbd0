"""The tutorial's task functions, defined once.

Plain runs call them directly; the lattice wraps these very functions in electrons.
Each task applies its own seed and torch thread count, because under Covalent it runs
in another process (a server pool worker or a Dask worker) whose settings we don't own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets
from torchvision.transforms import ToTensor

from mnist_core.config import WorkflowConfig
from mnist_core.model import NeuralNetwork

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def resolve_device(device: str) -> str:
    """'auto' picks CUDA when this process can see a GPU; 'cuda' without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch sees no CUDA device here")
    return device


class PreloadedMNIST(Dataset):
    """MNIST as one uint8 tensor, normalised a whole batch at a time.

    Gives the values ToTensor gives (uint8 / 255, shape 1x28x28) in the same order, without
    a PIL image per sample. It stays uint8 so it pickles no bigger than torchvision's.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float().div(255).unsqueeze(-3), self.targets[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # DataLoader's fetcher hands a whole batch of indices here (torch >= 2.0).
        return self[torch.as_tensor(indices)]


def _collated(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """PreloadedMNIST returns whole batches: nothing left to collate."""
    return batch


def make_loader(
    batch_size: int,
    train: bool,
    data_dir: str,
    subset: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    threads: int = 1,
    preloaded: bool = False,
) -> DataLoader:
    """MNIST data loader: the tutorial's (PIL image + ToTensor per sample), or preloaded."""
    torch.set_num_threads(threads)
    data = datasets.MNIST(data_dir, train=train, download=False, transform=ToTensor())
    size = len(data)
    if subset is not None and subset > size:
        raise ValueError(f"subset={subset} exceeds the {size} samples in {data_dir}")
    # A seeded generator travels with the loader, so the shuffle order is the same in
    # whichever process iterates it (train_model re-seeds it every epoch).
    generator = torch.Generator().manual_seed(seed)
    if preloaded:
        n = subset or size
        return DataLoader(
            PreloadedMNIST(data.data[:n].clone(), data.targets[:n].clone()),
            batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=_collated,
        )
    if subset is not None:
        data = Subset(data, range(subset))
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator)


@dataclass(frozen=True)
class LoaderSpec:
    """What a task needs to build a loader itself (the lean shape): paths, not data."""

    batch_size: int
    train: bool
    data_dir: str
    subset: int | None = None
    shuffle: bool = True
    seed: int = 0
    threads: int = 1
    preloaded: bool = False

    def build(self) -> DataLoader:
        return make_loader(**asdict(self))


def data_loader(spec: LoaderSpec) -> DataLoader:
    """The tutorial's data_loader task: a loader built from one spec (one graph input)."""
    return spec.build()


def get_optimizer(
    model: NeuralNetwork, learning_rate: float, momentum: float
) -> torch.optim.Optimizer:
    """Get Stochastic Gradient Descent optimizer."""
    return torch.optim.SGD(model.parameters(), learning_rate, momentum)


def train_over_one_epoch(
    dataloader: DataLoader,
    model: NeuralNetwork,
    optimizer: torch.optim.Optimizer,
    log_interval: int,
    epoch: int,
    loss_fn: LossFn,
    train_losses: list[float],
    train_counter: list[int],
    device: str = "cpu",
) -> tuple[NeuralNetwork, torch.optim.Optimizer]:
    """Train neural network model over one epoch."""
    size = len(dataloader.dataset)
    model.train()
    for batch, (X, y) in enumerate(dataloader):
        X, y = X.to(device), y.to(device)

        pred = model(X)
        loss = loss_fn(pred, y)

        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        if batch % log_interval == 0:
            loss, current = loss.item(), batch * dataloader.batch_size
            print(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")
            train_losses.append(loss)
            train_counter.append(current + (epoch - 1) * size)

    return model, optimizer


def train_model(
    train_dataloader: DataLoader,
    model: NeuralNetwork,
    config: WorkflowConfig,
    first_epoch: int = 1,
    epochs: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[NeuralNetwork, torch.optim.Optimizer]:
    """Train `epochs` (default: the config's) epochs from `first_epoch`.

    The tutorial appends the loss history to lists passed in; across Covalent tasks such
    mutations are lost, so the history rides on the returned model instead
    (`training_log(model)`), which keeps the graph the tutorial's. Passing the previous
    call's optimizer resumes its state (momentum), so training epoch by epoch in separate
    tasks equals one long call.
    """
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    # Train a copy: a task must not change its input (under Covalent it can't), or the
    # branches of a plain sweep would start from each other's weights.
    model = copy.deepcopy(model).to(device)
    previous = optimizer
    optimizer = get_optimizer(model, config.learning_rate, config.momentum)
    if previous is not None:
        # A copy from another process points at other tensors; its state maps by position.
        optimizer.load_state_dict(previous.state_dict())
    log = training_log(model)
    train_losses: list[float] = list(log["train_losses"])
    train_counter: list[int] = list(log["train_counter"])
    for epoch in range(first_epoch, first_epoch + (epochs or config.epochs)):
        print(f"Epoch {epoch}\n-------------------------------")
        # Seeded per epoch, so the shuffle order and dropout of an epoch don't depend on
        # which task (and which copy of the loader) runs it.
        torch.manual_seed(config.seed + epoch)
        if train_dataloader.generator is not None:
            train_dataloader.generator.manual_seed(config.seed + epoch)
        model, optimizer = train_over_one_epoch(
            dataloader=train_dataloader,
            model=model,
            optimizer=optimizer,
            log_interval=config.log_interval,
            epoch=epoch,
            loss_fn=F.nll_loss,
            train_losses=train_losses,
            train_counter=train_counter,
            device=device,
        )
    model = model.to("cpu")
    model.training_log = {"train_losses": train_losses, "train_counter": train_counter,
                          "threads": torch.get_num_threads(), "device": device}
    return model, optimizer


def training_log(model: NeuralNetwork) -> dict[str, Any]:
    """The loss history, torch threads and device of the train_model calls behind `model`."""
    empty = {"train_losses": [], "train_counter": [], "threads": None, "device": None}
    return getattr(model, "training_log", None) or empty


def test(
    dataloader: DataLoader, model: NeuralNetwork, config: WorkflowConfig
) -> tuple[float, float]:
    """Test the model performance; returns (accuracy in %, average loss)."""
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    loss_fn = F.nll_loss
    model = model.to(device)
    size = len(dataloader.dataset)
    num_batches = len(dataloader)
    model.eval()
    test_loss, correct = 0.0, 0.0
    with torch.no_grad():
        for X, y in dataloader:
            X, y = X.to(device), y.to(device)
            pred = model(X)
            test_loss += loss_fn(pred, y).item()
            correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    test_loss /= num_batches
    correct /= size
    accuracy = 100 * correct
    print(f"Test Error: \n Accuracy: {(accuracy):>0.1f}%, Avg loss: {test_loss:>8f} \n")
    return accuracy, test_loss


def lean_train(
    spec: LoaderSpec, model: NeuralNetwork, config: WorkflowConfig
) -> tuple[NeuralNetwork, torch.optim.Optimizer]:
    """train_model on a loader built here from `spec` (the lean shape: no data travels)."""
    return train_model(spec.build(), model, config)


def lean_test(
    spec: LoaderSpec, model: NeuralNetwork, config: WorkflowConfig
) -> tuple[float, float]:
    """test on a loader built here from `spec` (the lean shape)."""
    return test(spec.build(), model, config)
