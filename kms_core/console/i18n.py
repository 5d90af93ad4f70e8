"""The console's two languages. English strings are the message ids; Chinese uses the guide's terms.

The language comes from a `lang` cookie set by the page's switch, else from Accept-Language.
"""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("en", "zh")

ZH: dict[str, str] = {
    "Key Management Service console": "密钥管理服务控制台",
    "Key Management Service": "密钥管理服务",
    "Sign in": "登录",
    "Sign out": "退出登录",
    "Access key ID": "访问密钥 ID",
    "Secret access key": "私有访问密钥",
    "Sign in with the access key of your account (the same credentials as the API).":
        "使用账号的访问密钥登录(与 API 使用相同的凭证)。",
    "The access key ID or secret access key is wrong.": "访问密钥 ID 或私有访问密钥错误。",
    "Your session has expired or the form is stale; please try again.": "会话已过期或表单已失效,请重试。",
    "Resource pool": "资源池",
    "Switch": "切换",
    "Language": "语言",
    "Keys": "密钥列表",
    "Usage": "用量与审计",
    "Encryption of products": "云产品加密",
    "Create key": "创建密钥",
    "Create": "确定",
    "Cancel": "取消",
    "Key ID": "密钥 ID",
    "Alias": "别名",
    "Aliases": "别名",
    "Key state": "密钥状态",
    "Key type": "密钥类型",
    "Key usage": "密钥用途",
    "Protection level": "保护级别",
    "Creation date": "创建日期",
    "Description": "描述",
    "Rotation period": "轮转周期",
    "Key material source": "密钥材料来源",
    "Enterprise project": "企业项目",
    "Creator": "创建者",
    "Actions": "操作",
    "All": "全部",
    "Filter": "筛选",
    "Search by alias or key ID": "按别名或密钥 ID 搜索",
    "Default key": "默认密钥",
    "No keys.": "暂无密钥。",
    "Off": "不开启",
    "30 days": "30 天",
    "90 days": "90 天",
    "180 days": "180 天",
    "Custom": "自定义",
    "Custom period (days, 7-730)": "自定义周期(天,7~730)",
    "Ctyun KMS": "天翼云 KMS",
    "External": "外部",
    "I understand how external key material is used and what it means":
        "我了解使用外部密钥材料的方法和意义",
    "Symmetric keys (AES_256, Ctyun_SM4) only support Encrypt/Decrypt and are the only ones that rotate; "
    "external key material is for AES_256 only.":
        "对称密钥(AES_256、Ctyun_SM4)仅支持 Encrypt/Decrypt,且仅对称密钥支持自动轮转;仅 AES_256 支持导入外部密钥材料。",
    "Enabled": "启用中",
    "Disabled": "已禁用",
    "PendingDeletion": "待删除",
    "PendingImport": "待导入",
    "Key details": "密钥详情",
    "Basic information": "基本信息",
    "Disable": "禁用",
    "Enable": "启用",
    "Schedule deletion": "计划删除密钥",
    "Waiting period (days)": "预删除周期(天)",
    "Confirm": "确定",
    "Cancel deletion": "取消计划删除密钥",
    "Deletion date": "删除时间",
    "Save description": "保存描述",
    "Add alias": "创建别名",
    "Delete alias": "删除别名",
    "Rebind to key": "绑定到密钥",
    "Rebind": "更改绑定",
    "Default-key aliases cannot be changed.": "默认密钥的别名不能删除和添加。",
    "Key versions": "密钥版本",
    "Rotation policy": "轮转策略",
    "Set rotation policy": "设置轮转策略",
    "Next rotation": "下次轮转时间",
    "Rotate now": "立即轮转",
    "Rotation is off.": "未开启轮转。",
    "Version ID": "版本 ID",
    "Primary": "主版本",
    "Create key version": "创建密钥版本",
    "Download public key": "下载公钥",
    "Asymmetric keys do not rotate; create a new version instead.": "非对称密钥不支持自动轮转,请人工创建新的密钥版本。",
    "Key material": "密钥材料",
    "Get parameters for import": "获取导入密钥材料参数",
    "Wrapping key spec": "公钥类型",
    "Wrapping algorithm": "加密算法",
    "Download wrapping public key": "下载加密公钥",
    "Download import token": "下载导入令牌",
    "The import token is valid until": "导入令牌有效期至",
    "Import key material": "导入密钥材料",
    "Encrypted key material": "加密密钥材料",
    "Import token": "导入令牌",
    "Material expiry (optional, UTC)": "密钥材料过期时间(可选,UTC)",
    "Material expires": "密钥材料过期时间",
    "Never": "永不过期",
    "Delete key material": "删除密钥材料",
    "Done.": "操作成功。",
    "Back to keys": "返回密钥列表",
    "Metered calls per month": "每月计量调用次数",
    "Audit log": "审计日志",
    "Time": "时间",
    "Operation": "操作",
    "Result": "结果",
    "Principal": "操作者",
    "From (UTC)": "开始时间(UTC)",
    "To (UTC)": "结束时间(UTC)",
    "Older": "更早",
    "Newest": "最新",
    "No events.": "暂无事件。",
    "No calls metered yet.": "暂无计量调用。",
    "Calls": "调用次数",
    "Month": "月份",
    "Bucket": "存储桶",
    "Default encryption": "默认加密",
    "None": "不加密",
    "SSE-S3 (product default key)": "SSE-S3(云产品默认密钥)",
    "SSE-KMS": "SSE-KMS",
    "KMS key": "KMS 密钥",
    "Product default key (alias_oss)": "云产品默认密钥(alias_oss)",
    "Bucket key": "存储桶密钥",
    "on": "开启",
    "off": "关闭",
    "Save": "保存",
    "No buckets.": "暂无存储桶。",
    "Object storage buckets of this account, with the encryption new objects get by default.":
        "本账号的对象存储桶,以及新对象默认使用的加密方式。",
    "Products are not connected to this console.": "此控制台未连接云产品。",
    "Your account is frozen": "您的账号已冻结",
    "Every call is refused until the account is thawed.": "账号解冻前,所有调用都会被拒绝。",
    "Not found": "未找到",
    "The page or key does not exist.": "页面或密钥不存在。",
    "Forbidden": "禁止访问",
    "Skip to content": "跳到正文",
    "Main navigation": "主导航",
    "Yes": "是",
    "No": "否",
    "Key ID or alias": "密钥 ID 或别名",
    "Versions": "版本",
    "days": "天",
    "error:InvalidParameter": "参数无效",
    "error:UnsupportedOperation": "不支持该操作",
    "error:InvalidState": "密钥状态不允许该操作",
    "error:AlreadyExists": "已存在",
    "error:NotFound": "不存在",
    "error:InvalidKeyUsage": "密钥用途不支持该操作",
    "error:Disabled": "密钥已禁用",
    "error:InvalidImportToken": "导入令牌无效",
    "error:KeyUnavailable": "密钥暂不可用",
    "error:LimitExceeded": "超出限额",
    "error:ExpiredImportToken": "导入令牌已过期",
    "error:InvalidCiphertext": "密文无效",
    "error:AccessDenied": "拒绝访问",
    "error:AccountFrozen": "账号已冻结",
    "Too many failed sign-ins from this address: answers are slowed down.": "此地址登录失败次数过多,响应已放慢。",
    "not set: the gateway default": "未设置:网关默认",
    "The gateway encrypts every object; a bucket without a setting uses SSE-S3 with the product default key.":
        "网关会加密每个对象;未设置的存储桶使用云产品默认密钥(SSE-S3)。",
    "Tick “I understand how external key material is used and what it means” to use external key material.":
        "使用外部密钥材料前,请勾选“我了解使用外部密钥材料的方法和意义”。",
}


def negotiate(accept_language: str | None, cookie: str | None) -> str:
    if cookie in LANGUAGES:
        return str(cookie)
    best, best_q = "en", -1.0
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        lang = tag.strip().lower().split("-")[0]
        if lang in LANGUAGES and q > best_q:
            best, best_q = lang, q
    return best


def translator(lang: str) -> Callable[[str], str]:
    if lang == "zh":
        return lambda text: ZH.get(text, text)
    return lambda text: text
