"""SPIN (PaddleOCR's ``rec_r32_gaspin_bilstm_att``) in Paddle dygraph, re-derived from PaddleOCR's source.

Every class and function below was written while reading the upstream function it names, in the public
repository ``PaddlePaddle/PaddleOCR`` (``ppocr/modeling/...``) at the commits given in each docstring. The
code is this project's own (Paddle ops, nothing imported from ``spinrec``, nothing copied), but each
computation is the one upstream performs, in the same order and precision: in particular the TPS constants
are built with Paddle float64 ops exactly as ``GridGenerator`` builds them, and cast to float32 on every
call. Class names, attribute names and hence ``state_dict`` keys are upstream's (``transform``,
``backbone.ConvNet``, ``neck.encoder.encoder``, ``head``), and so are the initialisers, so that a freshly
built model is a freshly built PaddleOCR SPIN.

Upstream files read (commits as stored by the reference index):

- ``ppocr/modeling/transforms/gaspin_transformer.py`` @ 1693d195754f2c5ff07d16a4e3f81a9d3d20fbbf
- ``ppocr/modeling/transforms/tps.py`` @ b7e4528d3b90799a6e88ee62804270995c695133 (``GridGenerator``)
- ``ppocr/modeling/backbones/rec_resnet_32.py`` @ 7e81a9e62d8ebe1e8213575b6cb0602f54fff424
- ``ppocr/modeling/necks/rnn.py``: the stored PaddlePaddle/PaddleOCR revision (52b40f36) predates the
  cascade encoder, so it was read in ``smilelite/spin_paddle`` @ 7c8f3aa1c6a0956476c0235be5e5e646d86631a5,
  the branch that contributed SPIN to PaddleOCR (its ``Im2Seq``, ``BidirectionalLSTM``,
  ``EncoderWithCascadeRNN`` and ``SequenceEncoder`` are the later upstream text, formatting aside)
- ``ppocr/modeling/heads/rec_spin_att_head.py`` @ f773f2c9b5e4065058067873d116d9c6c2d1e617
- ``ppocr/modeling/architectures/base_model.py`` @ 7c8b2c8d19840423d1f1b6d794b8db5bbcd4a33e
- ``configs/rec/rec_r32_gaspin_bilstm_att.yml`` @ a28b94271427adaa8a610c106992e2dff841eb5b (the
  constructor arguments: ``offsets=True, default_type=6, loc_lr=0.1, stn=True``; ResNet32 512; cascade
  RNN hidden 256, out [256, 512], ``with_linear=True``; head hidden 256)

Pre/post-processing (``SPINLabelDecode``, ``SPINRecResizeImg``, ...) is not re-written: it is run from the
installed wheel by :mod:`.ppocr_wheel`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import ParamAttr, nn

# ------------------------------------------------------------------------------------------ transform


def cal_k(k: int = 5) -> list[float]:
    """``SP_TransformerNetwork.cal_K`` (gaspin_transformer.py @ 1693d195): the 2K+1 exponents beta.

    For i = 1..K, with q = 0.5 / (K + 1): ``lower = round(log(1 - q i) / log(q i), 2)`` then
    ``upper = round(1 / lower, 2)``, appended in that order; then 1.0 (also for K = 0)."""
    betas: list[float] = []
    step = 0.5 / (k + 1)
    for i in range(1, k + 1) if k != 0 else ():
        lower = round(math.log(1 - step * i) / math.log(step * i), 2)
        betas += [lower, round(1 / lower, 2)]
    betas.append(1.00)
    return betas


class SP_TransformerNetwork(nn.Layer):
    """``SP_TransformerNetwork`` (gaspin_transformer.py @ 1693d195): the structure-preserving intensity map.

    ``bn`` is ``nn.InstanceNorm2D(nc)`` with Paddle's defaults: affine (``scale``, ``bias``), epsilon 1e-5.
    """

    def __init__(self, nc: int = 1, default_type: int = 5):
        super().__init__()
        self.power_list = cal_k(default_type)
        self.sigmoid = nn.Sigmoid()
        self.bn = nn.InstanceNorm2D(nc)

    def forward(self, batch_I, weights, offsets, lambda_color=None):
        """``SP_TransformerNetwork.forward``: map to [0, 1]; blend with the AIN offsets by the gate
        (``x (1 - a) + offsets a``); sum of ``weights[k] * x ** beta_k`` (``Tensor.pow`` per exponent,
        stacked on axis 1); instance norm; ``sigmoid * 2 - 1``. ``weights`` is ``[B, 2K+1, 1]``."""
        x = (batch_I + 1) * 0.5
        if offsets is not None:
            x = x * (1 - lambda_color) + offsets * lambda_color
        w = weights.unsqueeze(-1).unsqueeze(-1)  # [B, 2K+1, 1, 1, 1]
        powers = paddle.stack([x.pow(beta) for beta in self.power_list], axis=1)  # [B, 2K+1, C, H, W]
        mixed = paddle.sum(powers * w, axis=1)
        return self.sigmoid(self.bn(mixed)) * 2 - 1


class GridGenerator(nn.Layer):
    """``GridGenerator`` (tps.py @ b7e4528d): TPS grid ``P_hat @ (inv(Delta_C) @ [C'; fc(C')])``.

    ``fc`` is constant-zero initialised with learning rate 0. (Upstream also names its parameters
    ``ex_fc_w`` / ``ex_fc_b``; Paddle dygraph refuses a parameter name twice per process, and the tests
    build several models, so the names are left to Paddle here. They appear only in the name table of
    ``paddle.save``, which the converter ignores.) The constants C, P, inv(Delta_C)
    and P_hat are rebuilt in float64 with Paddle ops on every call and cast to float32 before the two
    float32 matmuls, as upstream does.
    """

    def __init__(self, in_channels: int, num_fiducial: int):
        super().__init__()
        self.eps = 1e-6
        self.F = num_fiducial
        zero = nn.initializer.Constant(0.0)
        self.fc = nn.Linear(
            in_channels, 6,
            weight_attr=ParamAttr(learning_rate=0.0, initializer=zero),
            bias_attr=ParamAttr(learning_rate=0.0, initializer=zero),
        )  # fmt: skip

    def build_C_paddle(self):
        """``GridGenerator.build_C_paddle``: F/2 fiducials on y = -1 (x from -1 to 1), then F/2 on y = +1;
        ``[F, 2]`` float64."""
        half = self.F // 2
        xs = paddle.linspace(-1.0, 1.0, half, dtype="float64")
        top = paddle.stack([xs, -1 * paddle.ones([half], dtype="float64")], axis=1)
        bottom = paddle.stack([xs, paddle.ones([half], dtype="float64")], axis=1)
        return paddle.concat([top, bottom], axis=0)

    def build_P_paddle(self, I_r_size):
        """``GridGenerator.build_P_paddle``: ``I_r_size`` is unpacked as (height, width); pixel-centre
        coordinates ``(arange(-n, n, 2) + 1) / n`` per axis; ``paddle.meshgrid(x, y)`` ('ij': ``[W, H]``),
        stacked to ``[W, H, 2]``, transposed to ``[H, W, 2]`` and flattened: point ``i * W + j`` is
        ``(x_j, y_i)``, x fastest (the natural lattice)."""
        height, width = I_r_size
        gx = (paddle.arange(-width, width, 2, dtype="float64") + 1.0) / paddle.to_tensor(width, dtype="float64")
        gy = (paddle.arange(-height, height, 2, dtype="float64") + 1.0) / paddle.to_tensor(height, dtype="float64")
        p = paddle.stack(paddle.meshgrid(gx, gy), axis=2)  # [W, H, 2]
        # flatten, not reshape: Paddle Inference (PIR, 3.3) refuses reshape of this transposed float64 tensor
        return paddle.transpose(p, perm=[1, 0, 2]).flatten(0, 1)

    def build_inv_delta_C_paddle(self, C):
        """``GridGenerator.build_inv_delta_C_paddle``: ``hat_C[i, j] = r^2 log r`` with r the distance
        between fiducials i and j (r = 1 on the diagonal, so 0 there); Delta_C is
        ``[[1, C, hat_C], [0, C^T], [0, 1^T]]`` ((F+3) x (F+3)); returns ``paddle.inverse`` of it."""
        f = self.F
        r = paddle.norm(C.unsqueeze(1) - C.unsqueeze(0), p=2, axis=2) + paddle.eye(f, dtype="float64")
        hat_C = (r**2) * paddle.log(r)
        delta_C = paddle.concat(
            [
                paddle.concat([paddle.ones((f, 1), dtype="float64"), C, hat_C], axis=1),
                paddle.concat([paddle.zeros((2, 3), dtype="float64"), paddle.transpose(C, perm=[1, 0])], axis=1),
                paddle.concat([paddle.zeros((1, 3), dtype="float64"), paddle.ones((1, f), dtype="float64")], axis=1),
            ],
            axis=0,
        )
        return paddle.inverse(delta_C)

    def build_P_hat_paddle(self, C, P):
        """``GridGenerator.build_P_hat_paddle``: rows ``[1, x, y, d_f^2 log(d_f + eps)]`` with d_f the
        distance of lattice point (x, y) to fiducial f; ``[n, F+3]`` float64."""
        n = P.shape[0]
        diff = paddle.tile(P.unsqueeze(1), (1, self.F, 1)) - C.unsqueeze(0)  # [n, F, 2]
        d = paddle.norm(diff, p=2, axis=2)
        rbf = paddle.square(d) * paddle.log(d + self.eps)
        return paddle.concat([paddle.ones((n, 1), dtype="float64"), P, rbf], axis=1)

    def get_expand_tensor(self, batch_C_prime):
        """``GridGenerator.get_expand_tensor``: ``fc`` of the flattened fiducials, as 3 extra rows ``[B, 3, 2]``."""
        b, f, two = batch_C_prime.shape
        return self.fc(batch_C_prime.reshape([b, f * two])).reshape([-1, 3, 2])

    def forward(self, batch_C_prime, I_r_size):
        """``GridGenerator.forward``: ``[B, F, 2]`` fiducials -> ``[B, H*W, 2]`` sampling points (float32)."""
        C = self.build_C_paddle()
        P = self.build_P_paddle(I_r_size)
        inv_delta_C = self.build_inv_delta_C_paddle(C).astype("float32")
        P_hat = self.build_P_hat_paddle(C, P).astype("float32")
        inv_delta_C.stop_gradient = True
        P_hat.stop_gradient = True
        extra = self.get_expand_tensor(batch_C_prime)
        extra.stop_gradient = True
        batch_T = paddle.matmul(inv_delta_C, paddle.concat([batch_C_prime, extra], axis=1))
        return paddle.matmul(P_hat, batch_T)


class GA_SPIN_Transformer(nn.Layer):
    """``GA_SPIN_Transformer`` (gaspin_transformer.py @ 1693d195), with ``norm_type='BN'``.

    The localisation trunk (``spt_convnet``, ``stucture_fc1``'s convolutions, ``offset_fc1``) normalises
    with ``nn.BatchNorm2D(use_global_stats=True)``; ``stucture_fc1`` ends with ``Linear(512, 256)``
    (initialiser ``Normal(0.001)``, i.e. mean 0.001, std 1), an ordinary ``nn.BatchNorm1D(256)`` and ReLU.
    ``stucture_fc2`` starts at zero weight and the bias of :meth:`init_spin`, learning rate ``loc_lr``.
    The 54 outputs are 13 curve weights, the AIN gate logit and 20 fiducials (x, y).
    """

    def __init__(self, in_channels=1, I_r_size=(32, 100), offsets=False, norm_type="BN", default_type=6, loc_lr=1, stn=True):
        super().__init__()
        self.nc = in_channels
        self.spt = True
        self.offsets = offsets
        self.stn = stn
        self.I_r_size = I_r_size
        self.out_channels = in_channels
        if norm_type == "BN":
            norm = functools.partial(nn.BatchNorm2D, use_global_stats=True)
        elif norm_type == "IN":
            norm = functools.partial(nn.InstanceNorm2D, weight_attr=False, use_global_stats=False)
        else:
            raise NotImplementedError(f"normalization layer [{norm_type}] is not found")

        def conv(cin, cout):
            return [nn.Conv2D(cin, cout, 3, 1, 1, bias_attr=False), norm(cout), nn.ReLU()]

        self.sp_net = SP_TransformerNetwork(in_channels, default_type)
        self.spt_convnet = nn.Sequential(
            *conv(in_channels, 32), nn.MaxPool2D(kernel_size=2, stride=2),  # 16 x 50
            *conv(32, 64), nn.MaxPool2D(kernel_size=2, stride=2),  # 8 x 25
            *conv(64, 128), nn.MaxPool2D(kernel_size=2, stride=2),  # 4 x 12
        )  # fmt: skip
        self.stucture_fc1 = nn.Sequential(
            *conv(128, 256), nn.MaxPool2D(kernel_size=2, stride=2),
            *conv(256, 256), nn.MaxPool2D(kernel_size=2, stride=2),
            *conv(256, 512),
            nn.AdaptiveAvgPool2D(1), nn.Flatten(1, -1),
            nn.Linear(512, 256, weight_attr=nn.initializer.Normal(0.001)), nn.BatchNorm1D(256), nn.ReLU(),
        )  # fmt: skip
        self.spt_length = 2 * default_type + 1
        self.out_weight = self.spt_length + (1 if offsets else 0)
        if stn:
            self.F = 20
            self.out_weight += 2 * self.F
            self.GridGenerator = GridGenerator(2 * self.F, self.F)
        bias = self.init_spin(2 * default_type).reshape(-1)
        self.stucture_fc2 = nn.Linear(
            256, self.out_weight,
            weight_attr=ParamAttr(learning_rate=loc_lr, initializer=nn.initializer.Assign(np.zeros([256, self.out_weight]))),
            bias_attr=ParamAttr(learning_rate=loc_lr, initializer=nn.initializer.Assign(bias)),
        )  # fmt: skip
        self.sigmoid = nn.Sigmoid()
        if offsets:
            self.offset_fc1 = nn.Sequential(nn.Conv2D(128, 16, 3, 1, 1, bias_attr=False), norm(16), nn.ReLU())
            self.offset_fc2 = nn.Conv2D(16, in_channels, 3, 1, 1)
            self.pool = nn.MaxPool2D(2, 2)

    def init_spin(self, nz: int) -> np.ndarray:
        """``GA_SPIN_Transformer.init_spin``: ``nz`` zeros, 5 (the beta = 1 curve), -5 (gate, with
        offsets), then with ``stn`` the RARE initial fiducials: x from -1 to 1, y from 0 to -1 on top
        and from 1 to 0 at the bottom."""
        parts = [np.zeros(nz), [5.0]] + ([[-5.0]] if self.offsets else [])
        if self.stn:
            half = self.F // 2
            xs = np.linspace(-1.0, 1.0, half)
            top = np.stack([xs, np.linspace(0.0, -1.0, num=half)], axis=1)
            bottom = np.stack([xs, np.linspace(1.0, 0.0, num=half)], axis=1)
            parts.append(np.concatenate([top, bottom], axis=0).reshape(-1))
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts])

    def localize(self, x):
        """The first half of ``GA_SPIN_Transformer.forward`` (offsets and stn on), split out so that tests
        can read the stage outputs: ``(sp_weight [B,13,1], offsets [B,C,2,6] after pool then sigmoid,
        lambda_color [B,1,1,1] = sigmoid of output 13, batch_C_prime [B,20,2] = outputs 14..53)``."""
        feat = self.spt_convnet(x)
        fusion = self.stucture_fc2(self.stucture_fc1(feat)).reshape([x.shape[0], self.out_weight, 1])
        lambda_color = self.sigmoid(fusion[:, self.spt_length, 0]).unsqueeze(-1).unsqueeze(-1).unsqueeze(-1)
        sp_weight = fusion[:, : self.spt_length, :]
        offsets = self.pool(self.offset_fc2(self.offset_fc1(feat)))
        assert offsets.shape[2] == 2 and offsets.shape[3] == 6, offsets.shape
        offsets = self.sigmoid(offsets)
        batch_C_prime = fusion[:, self.spt_length + 1 :, :].reshape([x.shape[0], self.F, 2])
        return sp_weight, offsets, lambda_color, batch_C_prime

    def forward(self, x):
        """``GA_SPIN_Transformer.forward`` (offsets and stn on, float32): offsets upsampled to the input
        size (``nn.functional.upsample``, bilinear, Paddle defaults ``align_corners=False, align_mode=0``);
        the grid reshaped to ``[B, I_r_size[0], I_r_size[1], 2]``; ``sp_net``; then
        ``F.grid_sample(padding_mode='border')`` with Paddle's defaults (bilinear, ``align_corners=True``)."""
        if not (self.offsets and self.stn):
            raise NotImplementedError("this reference covers the published configuration: offsets=True, stn=True")
        sp_weight, offsets, lambda_color, batch_C_prime = self.localize(x)
        offsets = nn.functional.upsample(offsets, size=(x.shape[2], x.shape[3]), mode="bilinear")
        grid = self.GridGenerator(batch_C_prime, self.I_r_size)
        grid = grid.reshape([grid.shape[0], self.I_r_size[0], self.I_r_size[1], 2])
        y = self.sp_net(x, sp_weight, offsets, lambda_color)
        return F.grid_sample(x=y, grid=grid, padding_mode="border")


# ------------------------------------------------------------------------------------------ backbone

_KAIMING = nn.initializer.KaimingNormal()


def _conv(cin: int, cout: int, kernel, stride=1, padding=0):
    """The convolutions of rec_resnet_32.py (@ 7e81a9e6): KaimingNormal weights, no bias."""
    return nn.Conv2D(cin, cout, kernel_size=kernel, stride=stride, padding=padding, weight_attr=_KAIMING, bias_attr=False)


class BasicBlock(nn.Layer):
    """``BasicBlock`` (rec_resnet_32.py @ 7e81a9e6): conv3x3-BN-ReLU-conv3x3-BN, plus the (downsampled)
    input, ReLU. Ordinary ``nn.BatchNorm2D``. Upstream keeps ``stride`` but builds both convolutions with
    stride 1 (``_conv3x3`` is called without it); so does this one."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 3, 1, 1)
        self.bn1 = nn.BatchNorm2D(planes)
        self.conv2 = _conv(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2D(planes)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Layer):
    """``ResNet`` (rec_resnet_32.py @ 7e81a9e6) with ``layers = [1, 2, 5, 3]``: stem conv0_1/conv0_2,
    then four stages (maxpool 2x2 / 2x2 / (2,1) stride with (0,1) padding / none), each a block list
    and a conv-BN-ReLU; the last stage ends with a 2x2 conv of stride (2,1), padding (0,1) and a 2x2 conv."""

    def __init__(self, input_channel: int, output_channel: int, block=BasicBlock, layers=(1, 2, 5, 3)):
        super().__init__()
        out = output_channel
        self.output_channel_block = [int(out / 4), int(out / 2), out, out]
        ch = self.output_channel_block
        self.inplanes = int(out / 8)
        self.conv0_1 = _conv(input_channel, int(out / 16), 3, 1, 1)
        self.bn0_1 = nn.BatchNorm2D(int(out / 16))
        self.conv0_2 = _conv(int(out / 16), self.inplanes, 3, 1, 1)
        self.bn0_2 = nn.BatchNorm2D(self.inplanes)
        self.relu = nn.ReLU()
        self.maxpool1 = nn.MaxPool2D(kernel_size=2, stride=2, padding=0)
        self.layer1 = self._make_layer(block, ch[0], layers[0])
        self.conv1 = _conv(ch[0], ch[0], 3, 1, 1)
        self.bn1 = nn.BatchNorm2D(ch[0])
        self.maxpool2 = nn.MaxPool2D(kernel_size=2, stride=2, padding=0)
        self.layer2 = self._make_layer(block, ch[1], layers[1])
        self.conv2 = _conv(ch[1], ch[1], 3, 1, 1)
        self.bn2 = nn.BatchNorm2D(ch[1])
        self.maxpool3 = nn.MaxPool2D(kernel_size=2, stride=(2, 1), padding=(0, 1))
        self.layer3 = self._make_layer(block, ch[2], layers[2])
        self.conv3 = _conv(ch[2], ch[2], 3, 1, 1)
        self.bn3 = nn.BatchNorm2D(ch[2])
        self.layer4 = self._make_layer(block, ch[3], layers[3])
        self.conv4_1 = _conv(ch[3], ch[3], 2, (2, 1), (0, 1))
        self.bn4_1 = nn.BatchNorm2D(ch[3])
        self.conv4_2 = _conv(ch[3], ch[3], 2, 1, 0)
        self.bn4_2 = nn.BatchNorm2D(ch[3])

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1):
        """``ResNet._make_layer``: a 1x1 conv + BN shortcut on the first block when stride or width change."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv(self.inplanes, planes * block.expansion, 1, stride), nn.BatchNorm2D(planes * block.expansion)
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        relu = self.relu
        x = relu(self.bn0_2(self.conv0_2(relu(self.bn0_1(self.conv0_1(x))))))
        x = relu(self.bn1(self.conv1(self.layer1(self.maxpool1(x)))))
        x = relu(self.bn2(self.conv2(self.layer2(self.maxpool2(x)))))
        x = relu(self.bn3(self.conv3(self.layer3(self.maxpool3(x)))))
        x = relu(self.bn4_1(self.conv4_1(self.layer4(x))))
        return relu(self.bn4_2(self.conv4_2(x)))


class ResNet32(nn.Layer):
    """``ResNet32`` (rec_resnet_32.py @ 7e81a9e6): ``ConvNet = ResNet(in, out, BasicBlock, [1, 2, 5, 3])``."""

    def __init__(self, in_channels: int, out_channels: int = 512):
        super().__init__()
        self.out_channels = out_channels
        self.ConvNet = ResNet(in_channels, out_channels, BasicBlock, [1, 2, 5, 3])

    def forward(self, inputs):
        return self.ConvNet(inputs)


# ------------------------------------------------------------------------------------------ neck


class Im2Seq(nn.Layer):
    """``Im2Seq`` (necks/rnn.py, see the module doc): ``[B, C, 1, W]`` -> ``[B, W, C]``."""

    def __init__(self, in_channels: int, **kwargs):
        super().__init__()
        self.out_channels = in_channels

    def forward(self, x):
        assert x.shape[2] == 1, x.shape
        return x.squeeze(axis=2).transpose([0, 2, 1])


class BidirectionalLSTM(nn.Layer):
    """``BidirectionalLSTM`` (necks/rnn.py): ``nn.LSTM`` (batch-major; ``direction='bidirectional'``
    concatenates forward then backward outputs) followed, with ``with_linear``, by ``Linear(2 H, out)``."""

    def __init__(self, input_size, hidden_size, output_size=None, num_layers=1, dropout=0, direction=False, time_major=False, with_linear=False):
        super().__init__()
        self.with_linear = with_linear
        self.rnn = nn.LSTM(input_size, hidden_size, num_layers=num_layers, dropout=dropout, direction=direction, time_major=time_major)
        if with_linear:
            self.linear = nn.Linear(hidden_size * 2, output_size)

    def forward(self, input_feature):
        recurrent, _ = self.rnn(input_feature)
        return self.linear(recurrent) if self.with_linear else recurrent


class EncoderWithCascadeRNN(nn.Layer):
    """``EncoderWithCascadeRNN`` (necks/rnn.py): ``num_layers`` one-layer bidirectional LSTMs in a
    ``LayerList`` named ``encoder``, layer i mapping ``out_channels[i-1]`` (or the input) to ``out_channels[i]``."""

    def __init__(self, in_channels, hidden_size, out_channels, num_layers=2, with_linear=False):
        super().__init__()
        self.out_channels = out_channels[-1]
        self.encoder = nn.LayerList(
            [
                BidirectionalLSTM(
                    in_channels if i == 0 else out_channels[i - 1], hidden_size, output_size=out_channels[i],
                    num_layers=1, direction="bidirectional", with_linear=with_linear,
                )  # fmt: skip
                for i in range(num_layers)
            ]
        )

    def forward(self, x):
        for layer in self.encoder:
            x = layer(x)
        return x


class SequenceEncoder(nn.Layer):
    """``SequenceEncoder`` (necks/rnn.py) for ``encoder_type='cascadernn'``: ``encoder_reshape`` (Im2Seq)
    then ``encoder`` (EncoderWithCascadeRNN, extra keyword arguments passed through)."""

    def __init__(self, in_channels, encoder_type="cascadernn", hidden_size=48, **kwargs):
        super().__init__()
        if encoder_type != "cascadernn":
            raise NotImplementedError("this reference covers SPIN's neck: encoder_type='cascadernn'")
        self.encoder_reshape = Im2Seq(in_channels)
        self.encoder_type = encoder_type
        self.encoder = EncoderWithCascadeRNN(self.encoder_reshape.out_channels, hidden_size, **kwargs)
        self.out_channels = self.encoder.out_channels
        self.only_reshape = False

    def forward(self, x):
        return self.encoder(self.encoder_reshape(x))


# ------------------------------------------------------------------------------------------ head


class AttentionLSTMCell(nn.Layer):
    """``AttentionLSTMCell`` (rec_spin_att_head.py @ f773f2c9, ``use_gru=False``).

    One step: ``e = score(tanh(i2h(H) + h2h(h_prev)[:, None]))`` (``i2h`` recomputed at every step),
    ``alpha = softmax(e)`` over time (axis 1), context ``alpha^T H``, then
    ``LSTMCell([context, onehot], (h, c))``. Returns ``((output, (h, c)), alpha)``.
    """

    def __init__(self, input_size, hidden_size, num_embeddings, use_gru=False):
        super().__init__()
        if use_gru:
            raise NotImplementedError("SPIN's head uses the LSTM cell")
        self.i2h = nn.Linear(input_size, hidden_size, bias_attr=False)
        self.h2h = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias_attr=False)
        self.rnn = nn.LSTMCell(input_size=input_size + num_embeddings, hidden_size=hidden_size)
        self.hidden_size = hidden_size

    def forward(self, prev_hidden, batch_H, char_onehots):
        energy = self.score(paddle.tanh(self.i2h(batch_H) + self.h2h(prev_hidden[0]).unsqueeze(1)))  # [B, T, 1]
        alpha = paddle.transpose(F.softmax(energy, axis=1), [0, 2, 1])  # [B, 1, T]
        context = paddle.squeeze(paddle.mm(alpha, batch_H), axis=1)
        return self.rnn(paddle.concat([context, char_onehots], 1), prev_hidden), alpha


class SPINAttentionHead(nn.Layer):
    """``SPINAttentionHead`` (rec_spin_att_head.py @ f773f2c9).

    ``batch_max_length + 1`` (26) steps from zero states. Training: teacher forcing on ``targets[0]``,
    raw logits. Inference: the first input is class 0 (int32), then ``one_hot(argmax)`` of the previous
    step's logits is fed back; all steps run (no early stop); softmax over classes (axis 2) at the end.
    """

    def __init__(self, in_channels, out_channels, hidden_size, **kwargs):
        super().__init__()
        self.input_size = in_channels
        self.hidden_size = hidden_size
        self.num_classes = out_channels
        self.attention_cell = AttentionLSTMCell(in_channels, hidden_size, out_channels, use_gru=False)
        self.generator = nn.Linear(hidden_size, out_channels)

    def _char_to_onehot(self, input_char, onehot_dim):
        return F.one_hot(input_char, onehot_dim)

    def forward(self, inputs, targets=None, batch_max_length=25):
        b = inputs.shape[0]
        hidden = (paddle.zeros((b, self.hidden_size)), paddle.zeros((b, self.hidden_size)))
        steps = []
        if self.training:
            labels = targets[0]
            for i in range(batch_max_length + 1):
                (out, hidden), _ = self.attention_cell(hidden, inputs, self._char_to_onehot(labels[:, i], self.num_classes))
                steps.append(out.unsqueeze(1))
            return self.generator(paddle.concat(steps, axis=1))
        prev = paddle.zeros(shape=[b], dtype="int32")
        for _ in range(batch_max_length + 1):
            (out, hidden), _ = self.attention_cell(hidden, inputs, self._char_to_onehot(prev, self.num_classes))
            logits = self.generator(out)
            steps.append(logits.unsqueeze(1))
            prev = logits.argmax(axis=1)
        return F.softmax(paddle.concat(steps, axis=1), axis=2)


# ------------------------------------------------------------------------------------------ model


class SPINPaddle(nn.Layer):
    """``BaseModel`` (architectures/base_model.py @ 7c8b2c8d) as built from rec_r32_gaspin_bilstm_att.yml:
    ``transform -> backbone -> neck -> head`` (inference: ``head(x)`` without targets).

    The width knobs (``backbone_out``, ``neck_hidden``, ``neck_out``, ``head_hidden``) default to the
    published configuration; ``num_classes`` 70 is spin_dict.txt's 68 characters plus sos and eos.
    """

    def __init__(self, in_channels=1, backbone_out=512, neck_hidden=256, neck_out=(256, 512), head_hidden=256, num_classes=70):
        super().__init__()
        self.transform = GA_SPIN_Transformer(in_channels, offsets=True, default_type=6, loc_lr=0.1, stn=True)
        self.backbone = ResNet32(self.transform.out_channels, backbone_out)
        self.neck = SequenceEncoder(
            self.backbone.out_channels, "cascadernn", hidden_size=neck_hidden, out_channels=list(neck_out), with_linear=True
        )
        self.head = SPINAttentionHead(self.neck.out_channels, num_classes, head_hidden)

    def forward(self, x):
        return self.head(self.neck(self.backbone(self.transform(x))))


# ------------------------------------------------------------------------------------------ test checkpoints


def randomize_(
    model: SPINPaddle, seed: int, generator_scale: float = 8.0, fiducial_scale: float = 0.02, conv_gain: float = 1.0, seq_gain: float = 1.0,
    curve_weights: str = "positive",
) -> None:
    """Give every parameter and BatchNorm statistic a non-trivial random value (in place); not upstream code.

    Conv weights He-normal; BN weight in [0.5, 1.5], bias N(0, 0.1), ``_mean`` N(0, 0.1), ``_variance`` in
    [0.5, 2] (positive); Linear / LSTM weights uniform in +-1/sqrt(fan_in); ``GridGenerator.fc`` small but
    non-zero; ``stucture_fc2`` around upstream's initial bias (:meth:`GA_SPIN_Transformer.init_spin`) with
    weights ``fiducial_scale`` so the fiducials move and the AIN gate is open; ``generator`` weights scaled
    by ``generator_scale`` so the greedy argmax is clear (no near-ties).

    ``curve_weights``: "positive" gives the 13 power curves biases in [0.1, 1] (a monotone intensity curve);
    "normal" draws them from N(0, 1), which often makes the curves cancel so that the instance norm divides
    by a tiny spread and amplifies fp32 rounding (in PaddleOCR as in any port).
    """
    rng = np.random.RandomState(seed)
    norms = {
        n for n, layer in model.named_sublayers() if isinstance(layer, (nn.BatchNorm2D, nn.BatchNorm1D, nn.InstanceNorm2D))
    }
    transform = model.transform
    done = set()
    for name, p in model.named_parameters():
        if id(p) in done:  # LSTM per-cell aliases are the same tensors
            continue
        done.add(id(p))
        shape = tuple(p.shape)
        leaf = name.rsplit(".", 1)[-1]
        if name.startswith("transform.stucture_fc2."):
            if leaf == "weight":
                v = rng.normal(0.0, fiducial_scale, shape)
            else:  # 13 curve weights, the gate logit, then upstream's initial fiducials, perturbed
                v = transform.init_spin(transform.spt_length - 1)
                n = transform.spt_length
                v[:n] = rng.uniform(0.1, 1.0, n) if curve_weights == "positive" else rng.normal(0.0, 1.0, n)
                v[n] = rng.normal(0.0, 1.0)
                v[n + 1 :] += rng.normal(0.0, 0.1, shape[0] - n - 1)
        elif name.startswith("transform.GridGenerator.fc."):
            v = rng.normal(0.0, 0.01, shape)
        elif leaf == "_variance":
            v = rng.uniform(0.5, 2.0, shape)
        elif leaf == "_mean":
            v = rng.normal(0.0, 0.1, shape)
        elif name.rsplit(".", 1)[0] in norms:  # BatchNorm / InstanceNorm scale ("weight" / "scale") and bias
            v = rng.uniform(0.5, 1.5, shape) if leaf in ("weight", "scale") else rng.normal(0.0, 0.1, shape)
        elif len(shape) == 4:  # conv weight [out, in, kh, kw]
            fan_in = shape[1] * shape[2] * shape[3]
            v = rng.normal(0.0, conv_gain * math.sqrt(2.0 / fan_in), shape)
        elif len(shape) == 2:
            if ".rnn." in name:  # LSTM / LSTMCell [4H, in]
                bound = 1.0 / math.sqrt(shape[0] // 4)
            else:  # Linear, stored [in, out]
                bound = 1.0 / math.sqrt(shape[0])
            v = rng.uniform(-bound, bound, shape)
            if name.startswith("head.generator."):
                v = v * generator_scale
            elif name.startswith(("neck.", "head.")):
                v = v * seq_gain
        elif name == "head.generator.bias":  # class preferences, so that different images read differently
            v = rng.normal(0.0, 1.0, shape)
        else:  # remaining biases (conv, Linear, LSTM)
            v = rng.uniform(-0.1, 0.1, shape)
        p.set_value(v.astype(np.float32))
