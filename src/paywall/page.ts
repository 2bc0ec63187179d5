/**
 * The paywall page's style and script (plain browser JavaScript, no framework). The script reads
 * its data from the `mpp-data` JSON element; `document.body.dataset.state` names the state shown
 * (ready, no-wallet, wrong-chain, rejected, insufficient, expired, unsupported, error, paid...).
 */

export const style =
  'body{font:16px/1.5 system-ui,sans-serif;background:#f6f6f4;color:#1c1c1c;margin:0}main{max-width:34rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:12px;box-shadow:0 1px 4px #0002}h1{font-size:1.4rem;margin:0 0 .5rem}#price{font-size:1.2rem;font-weight:600}#status{color:#444}[data-state=rejected] #status,[data-state=error] #status,[data-state=insufficient] #status,[data-state=expired] #status,[data-state=wrong-chain] #status,[data-state=no-wallet] #status,[data-state=unsupported] #status{color:#a4260f}button{font:inherit;padding:.6rem 1.2rem;border:0;border-radius:8px;background:#1f5eff;color:#fff;cursor:pointer}pre{white-space:pre-wrap;word-break:break-word;background:#f3f3f3;padding:1rem;border-radius:8px}'

export const script = `(()=>{
const $=(id)=>document.getElementById(id)
const d=JSON.parse($('mpp-data').textContent),o=d.offer,status=$('status'),btn=$('action'),eth=window.ethereum
const fmt=(units)=>{const s=String(units).padStart(d.decimals+1,'0'),f=s.slice(s.length-d.decimals).replace(/0+$/,'');return s.slice(0,s.length-d.decimals)+(f?'.'+f:'')+' '+d.symbol}
const show=(state,text,label,fn)=>{document.body.dataset.state=state;status.textContent=text;btn.hidden=!label;if(label){btn.textContent=label;btn.onclick=fn}}
const ask=(method,params)=>eth.request(params?{method,params}:{method})
if(!o)return show('unsupported',d.detail+': this page cannot make any of the payments offered.')
const price=fmt(o.amount)
$('price').textContent='Price: '+price
if(o.unsupported)return show('unsupported','This page cannot pay: '+o.unsupported+'.')
const expired=()=>o.challenge.expires&&Date.parse(o.challenge.expires)<=Date.now()+5000
const expiredState=()=>show('expired','This price offer has expired. Load a fresh one to pay.','Get a fresh offer',()=>location.reload())
const fail=(e)=>{const m=String((e&&e.message)||e)
if(e&&e.code===4001)return show('rejected','You rejected the request in your wallet. Nothing was paid.','Try again',pay)
if(/insufficient|exceeds balance/i.test(m))return show('insufficient','Insufficient funds: '+m,'Try again',pay)
show('error','Something went wrong: '+m,'Try again',pay)}
const b64=(text)=>{let s='';for(const x of new TextEncoder().encode(text))s+=String.fromCharCode(x);return btoa(s).replace(/\\+/g,'-').replace(/\\//g,'_').replace(/=+$/,'')}
async function pay(){try{
if(expired())return expiredState()
show('connecting','Connecting to your wallet…')
const from=(await ask('eth_requestAccounts'))[0]
if(!from)return show('no-wallet','Your wallet shared no account.','Try again',pay)
const chain=Number(await ask('eth_chainId'))
if(chain!==o.chainId)return show('wrong-chain','Your wallet is on chain '+chain+'; this payment is on chain '+o.chainId+'.','Switch network',async()=>{try{await ask('wallet_switchEthereumChain',[{chainId:'0x'+o.chainId.toString(16)}]);await pay()}catch(e){fail(e)}})
const balance=BigInt(await ask('eth_call',[{to:o.currency,data:'0x70a08231'+from.slice(2).toLowerCase().padStart(64,'0')},'latest']))
if(balance<BigInt(o.amount))return show('insufficient','Insufficient funds: this account holds '+fmt(balance)+'; the price is '+price+'.','Try again',pay)
if(expired())return expiredState()
show('signing','Confirm the payment of '+price+' in your wallet…')
const hash=await ask('eth_sendTransaction',[{from,to:o.currency,data:o.data}])
show('confirming','Payment sent; waiting for the chain to confirm it…')
let receipt=null
for(let i=0;i<240&&!receipt;i++){receipt=await ask('eth_getTransactionReceipt',[hash]);if(!receipt)await new Promise((r)=>setTimeout(r,500))}
if(!receipt)return show('error','The payment was not confirmed in time (transaction '+hash+').')
if(receipt.status!=='0x1')return show('error','The payment failed on chain (transaction '+hash+'); nothing was charged.','Try again',pay)
show('unlocking','Payment confirmed; loading the content…')
const res=await fetch(location.href,{headers:{authorization:'Payment '+b64(JSON.stringify({challenge:o.challenge,payload:{type:'hash',hash}})),accept:'text/html,application/json;q=0.9,*/*;q=0.8'}})
const type=res.headers.get('content-type')||'',text=await res.text()
if(!res.ok){let detail=text;try{detail=JSON.parse(text).detail||text}catch{}
return show(/expire/i.test(detail)?'expired':'error','The server refused the payment: '+detail)}
if(/text\\/html/i.test(type)){document.open();document.write(text);document.close();return}
let shown=text;if(/json/i.test(type))try{shown=JSON.stringify(JSON.parse(text),null,2)}catch{}
const pre=document.createElement('pre');pre.id='content';pre.textContent=shown
show('paid','Paid '+price+'.');btn.remove();$('main').append(pre)
}catch(e){fail(e)}}
if(expired())return expiredState()
if(!eth)return show('no-wallet','No wallet found. Install a browser wallet (EIP-1193) and reload this page to pay.')
show('ready','Pay '+price+' to unlock this.','Connect wallet and pay',pay)
})()`
