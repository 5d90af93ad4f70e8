"""The resource pools (regions) of the product guide, section 1.9, with stable ids.

One catalog for every surface: SigV4 credential scopes name a pool by its id, the console's
drop-down shows its Chinese or English name, and `ssegw serve --region` picks which pools a
deployment serves. Ids are ASCII (pinyin of the city, then the pool number) because they travel
in SigV4 scopes and URLs; `华东1` keeps the id `cn-east-1` that earlier releases used as their
only region, so existing data directories stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourcePool:
    id: str
    name_zh: str
    name_en: str


def _pool(pool_id: str, name_zh: str, name_en: str) -> ResourcePool:
    return ResourcePool(pool_id, name_zh, name_en)


# In the guide's order (section 1.9, 44 pools). Never change an id once shipped: keys and
# objects are bound to it.
POOLS: tuple[ResourcePool, ...] = (
    _pool("cn-xian-5", "西安 5", "Xi'an 5"),
    _pool("cn-jinzhong-1", "晋中", "Jinzhong"),
    _pool("cn-xian-4", "西安 4", "Xi'an 4"),
    _pool("cn-neimeng-6", "内蒙 6", "Inner Mongolia 6"),
    _pool("cn-haikou-2", "海口 2", "Haikou 2"),
    _pool("cn-wuhan-4", "武汉 4", "Wuhan 4"),
    _pool("cn-nanjing-3", "南京 3", "Nanjing 3"),
    _pool("cn-chengdu-4", "成都 4", "Chengdu 4"),
    _pool("cn-kunming-2", "昆明 2", "Kunming 2"),
    _pool("cn-beijing-5", "北京 5", "Beijing 5"),
    _pool("cn-zhongwei-2", "中卫 2", "Zhongwei 2"),
    _pool("cn-guangzhou-6", "广州 6", "Guangzhou 6"),
    _pool("cn-guizhou-3", "贵州 3", "Guizhou 3"),
    _pool("cn-xining-2", "西宁 2", "Xining 2"),
    _pool("cn-nanning-2", "南宁 2", "Nanning 2"),
    _pool("cn-east-1", "华东1", "East China 1"),
    _pool("cn-hangzhou-2", "杭州 2", "Hangzhou 2"),
    _pool("cn-wuhan-41", "武汉 41", "Wuhan 41"),
    _pool("cn-shanghai-36", "上海 36", "Shanghai 36"),
    _pool("cn-wuhu-2", "芜湖 2", "Wuhu 2"),
    _pool("cn-changsha-42", "长沙 42", "Changsha 42"),
    _pool("cn-hefei-2", "合肥 2", "Hefei 2"),
    _pool("cn-lasa-3", "拉萨 3", "Lhasa 3"),
    _pool("cn-changsha-3", "长沙 3", "Changsha 3"),
    _pool("cn-urumqi-4", "乌鲁木齐 4", "Urumqi 4"),
    _pool("cn-fuzhou-3", "福州 3", "Fuzhou 3"),
    _pool("cn-nanjing-2", "南京 2", "Nanjing 2"),
    _pool("cn-xiamen-3", "厦门 3", "Xiamen 3"),
    _pool("cn-chongqing-2", "重庆 2", "Chongqing 2"),
    _pool("cn-nanjing-5", "南京 5", "Nanjing 5"),
    _pool("cn-fuzhou-4", "福州 4", "Fuzhou 4"),
    _pool("cn-xian-3", "西安3", "Xi'an 3"),
    _pool("cn-fuzhou-25", "福州 25", "Fuzhou 25"),
    _pool("cn-foshan-3", "佛山 3", "Foshan 3"),
    _pool("cn-xiongan-2", "雄安 2", "Xiong'an 2"),
    _pool("cn-nanning-23", "南宁 23", "Nanning 23"),
    _pool("cn-lanzhou-2", "兰州 2", "Lanzhou 2"),
    _pool("cn-chenzhou-2", "郴州 2", "Chenzhou 2"),
    _pool("cn-north-2", "华北 2", "North China 2"),
    _pool("cn-nanjing-4", "南京 4", "Nanjing 4"),
    _pool("cn-jiujiang-1", "九江", "Jiujiang"),
    _pool("cn-southwest-1", "西南 1", "Southwest China 1"),
    _pool("cn-shanghai-7", "上海 7", "Shanghai 7"),
    _pool("cn-wuhan-3", "武汉 3", "Wuhan 3"),
)

DEFAULT_POOL_ID = "cn-east-1"

_BY_ID = {p.id: p for p in POOLS}


class UnknownPool(ValueError):
    """A pool id that is not in the guide's catalog."""


def pool(pool_id: str) -> ResourcePool:
    try:
        return _BY_ID[pool_id]
    except KeyError:
        raise UnknownPool(f"unknown resource pool {pool_id!r}") from None


def is_pool(pool_id: str) -> bool:
    return pool_id in _BY_ID
